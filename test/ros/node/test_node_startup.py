"""kdbts_node's start-up failures read as the command-line tools': one log line naming the file and what is wrong."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage  # noqa: E402

from kdbts_ros.core.errors import EXIT_USER  # noqa: E402
from kdbts_ros.ros.node import KdbtsNode  # noqa: E402

pytestmark = pytest.mark.integration

NODE = [sys.executable, "-m", "kdbts_ros.ros.node", "--ros-args"]


def _log_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "content,named",
    [
        ("kdbts_node:\n  ros__parameters:\n    grid: [1, 2\n", "not valid YAML"),
        ("kdbts_node:\n  ros__parameters:\n    grid:\n      resolution: fine\n", "grid.resolution"),
        ("kdbts_node:\n  ros__parameters:\n    window_size: 1000\n", "window_size"),
        ("kdbts_node:\n  ros__parameters:\n    topics:\n      images: [/a, /b]\n", "topics.images"),
        (None, "no such file"),
    ],
)
def test_a_bad_parameter_file_is_one_fatal_line_and_exit_code(tmp_path, content, named):
    params = tmp_path / "params.yaml"
    if content is not None:
        params.write_text(content)
    done = subprocess.run([*NODE, "--params-file", str(params)], capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_USER
    (line,) = _log_lines(done.stderr)
    assert "[FATAL]" in line and "cannot start" in line and str(params) in line and named in line, line


def test_an_unreadable_checkpoint_is_one_error_line_and_the_node_stays_up(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage" + bytes(64))
    proc = subprocess.Popen(
        [*NODE, "-p", f"model.checkpoint:={bad}"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ROS_DOMAIN_ID": str(150 + os.getpid() % 30)},
    )
    try:
        assert select.select([proc.stderr], [], [], 120)[0], "the node said nothing"
        line = proc.stderr.readline()  # the first thing it says
        time.sleep(1.0)
        assert proc.poll() is None  # unconfigured, waiting for a lifecycle manager to retry
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[1]
    assert "[ERROR]" in line and f"configure failed, model not loaded: {bad}: not a readable safetensors" in line
    assert "Traceback" not in rest and not any("ERROR" in r or "FATAL" in r for r in _log_lines(rest))


def test_inputs_without_a_publisher_or_of_another_type_are_named(monkeypatch):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = 180 + os.getpid() % 20
    ctx, other = rclpy.Context(), rclpy.Context()  # DDS refuses two types on a topic within one participant
    rclpy.init(context=ctx, domain_id=domain)
    rclpy.init(context=other, domain_id=domain)
    try:
        images, infos = ["/nobody/image_raw", "/typed/image_raw"], ["/nobody/camera_info", "/typed/camera_info"]
        node = KdbtsNode(
            context=ctx,
            parameter_overrides=[
                Parameter("topics.images", value=images),
                Parameter("topics.camera_infos", value=infos),
                Parameter("model.checkpoint", value="random"),
                Parameter("model.backbone", value="resnet18"),
            ],
        )
        probe = rclpy.create_node("probe", context=other)
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            probe.create_publisher(CompressedImage, "/typed/image_raw", 1)  # a camera sending jpeg
            probe.create_publisher(CameraInfo, "/typed/camera_info", 1)
            deadline = time.monotonic() + 20
            while len(node.input_problems()) != 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            problems = node.input_problems()
            assert [p.split(":")[0] for p in problems] == [
                "input /nobody/image_raw",
                "input /nobody/camera_info",
                "input /typed/image_raw",
            ], problems
            assert "no publisher" in problems[0] and "sensor_msgs/msg/CompressedImage" in problems[2]
        finally:
            node.destroy_node()
            probe.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
        rclpy.shutdown(context=other)


@pytest.mark.parametrize(
    "content,said",
    [
        # a section keyed by another node's name: rcl applies nothing and says nothing
        ("/rear/kdbts_node:\n  ros__parameters:\n    window_size: 6\n", "no parameters for /front/kdbts_node"),
        # rclpy's own (use_sim_time, as the launch files pass it) are no news
        ("/**:\n  ros__parameters:\n    use_sim_time: false\n    autostrat: false\n", "unknown parameter 'autostrat'"),
    ],
)
def test_parameters_a_node_would_pass_by_are_one_warning_line(tmp_path, content, said):
    params = tmp_path / "params.yaml"
    params.write_text(content)
    proc = subprocess.Popen(
        [*NODE, "-r", "__ns:=/front", "-p", "autostart:=false", "--params-file", str(params)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ROS_DOMAIN_ID": str(150 + os.getpid() % 30)},
    )
    try:
        assert select.select([proc.stderr], [], [], 120)[0], "the node said nothing"
        line = proc.stderr.readline()
        time.sleep(0.5)
        assert proc.poll() is None  # it starts all the same, as rcl would have it
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert "[WARN]" in line and str(params) in line and said in line and "not applied" in line, line
