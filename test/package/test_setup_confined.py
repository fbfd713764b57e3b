"""The set-up writes nothing outside the checkout and its venv, and needs nothing under /opt.

``tools/build_msgs.sh`` (the part of ``make test`` / ``make demo`` after pip) runs on a copy of
this checkout in a mount namespace where every file system but the copy and the venv is
read-only and /opt is an empty read-only folder (where the ROS wheels were built, and where
the set-up used to write links as root): any write elsewhere would fail the script. Needs
``unshare`` (root, as in CI); skipped where it is not permitted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_checkout

VENV = Path(sys.prefix)


def _confined(script: str) -> str:
    """bash commands that run ``script`` with only ``$COPY`` and ``$VENV`` writable and /opt empty."""
    return f"""set -e
mount --make-rprivate /
mount --bind "$COPY" "$COPY"
mount --bind "$VENV" "$VENV"
mount -t tmpfs -o ro,size=1m none /opt
for m in $(awk '{{print $2}}' /proc/self/mounts | sort -u); do
  case "$m" in "$COPY"|"$VENV"|/proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
touch /kdbts_probe 2>/dev/null && {{ echo "root file system still writable" >&2; exit 3; }}
{script}"""


@pytest.mark.build
def test_msgs_build_writes_only_into_the_checkout_and_the_venv(tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("no mount namespaces here (needs root): the confinement cannot be enforced")
    copy = tmp_path / "kdbts_ros"
    copy_checkout(copy)
    (copy / "tmp").mkdir()
    env = dict(os.environ, COPY=str(copy), VENV=str(VENV), TMPDIR=str(copy / "tmp"))
    run = subprocess.run(
        ["unshare", "-m", "bash", "-c", _confined("tools/build_msgs.sh")],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "kdbts_ros msgs up to date" in run.stdout
    generated = copy / "kdbts_ros" / "msg" / "_density_grid.py"
    assert generated.is_file() and "class DensityGrid" in generated.read_text()
    # the wheels' CMake files now name this Python and this venv, nothing under /opt
    stale = subprocess.run(
        ["grep", "-rl", "/opt/python", *map(str, VENV.glob("share/*/cmake"))], capture_output=True, text=True
    ).stdout
    assert stale == ""
