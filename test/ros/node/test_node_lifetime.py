"""kdbts_node started with --exit-with-parent, as the launch file starts it, ends when its parent is killed.

A launch that is killed (SIGKILL, a crash) cannot stop its children; the node asks the kernel
for SIGINT when its parent ends and shuts down as on Ctrl-C. Without the flag it stays up (the
control case), which is what a node started from a shell that exits wants.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
from conftest import wait_until  # noqa: E402
from rclpy.context import Context  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
# the "launch": starts the node, says its pid, waits to be killed
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-m", "kdbts_ros.ros.node", *sys.argv[1:],
                          "--ros-args", "-p", "autostart:=false"], stdout=subprocess.DEVNULL)
print(child.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
@pytest.mark.parametrize("flag,survives", [("--exit-with-parent", False), (None, True)])
def test_the_node_ends_with_its_killed_parent_only_when_asked(flag, survives):
    env = dict(
        os.environ,
        ROS_DOMAIN_ID=str(random.randint(100, 200)),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
    )
    env.pop("ROS_LOCALHOST_ONLY", None)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, *([flag] if flag else [])], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    saved = dict(os.environ)
    os.environ.update(env)  # read by rcl at init
    ctx = Context()
    try:
        rclpy.init(context=ctx)
        probe = rclpy.create_node("kdbts_lifetime_probe", context=ctx)
        # up and past the flag's handling once the node is on the graph
        assert wait_until(lambda: "kdbts_node" in probe.get_node_names(), 120), "kdbts_node never came up"
        parent.kill()
        parent.wait()
        gone = wait_until(lambda: not _running(child), 5 if survives else 30)
        assert gone != survives
    finally:
        parent.kill()
        if _running(child):
            os.kill(child, 9)
        if ctx.ok():
            rclpy.shutdown(context=ctx)
        os.environ.clear()
        os.environ.update(saved)
