"""colcon builds this checkout in a temporary workspace, as a user's ``ws/src/kdbts_ros`` is built.

The ROS environment is this venv (its ament, rosidl and rclpy wheels), activated as a user
would; under ``make test`` the venv is the checkout's own ``.venv``, inside the package's
source tree, which is the case CMake used to refuse. Selected with ``-m build`` (about a
minute on two cores); skipped where colcon is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdbts_ros.core.errors import EXIT_USER

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
pytestmark = pytest.mark.build

COLCON = shutil.which("colcon", path=str(VENV / "bin"))


def _ros_env() -> dict[str, str]:
    """The venv activated as the ROS environment: its bin first, its prefix for ament and CMake."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH")}
    env.update(
        PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}",
        VIRTUAL_ENV=str(VENV),
        AMENT_PREFIX_PATH=str(VENV),
        CMAKE_PREFIX_PATH=str(VENV),
    )
    return env


def _tree_state() -> str:
    """git's view of the checkout, ignored files included, to see that the build wrote nothing into it."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--ignored"], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    if COLCON is None:
        pytest.skip("colcon is not installed in this venv (requirements-dev.txt)")
    ws = tmp_path_factory.mktemp("ws")
    before = _tree_state()
    build = subprocess.run(
        [COLCON, "build", "--base-paths", str(ROOT), "--cmake-args", "-DBUILD_TESTING=OFF"],
        cwd=ws,
        env=_ros_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    assert _tree_state() == before, "colcon build wrote into the source tree"
    return ws


def test_install_space_holds_the_node_launch_config_rviz_messages_weights_and_c_source(workspace):
    prefix = workspace / "install" / "kdbts_ros"
    node = prefix / "lib/kdbts_ros/kdbts_node"
    assert node.is_file() and os.access(node, os.X_OK)
    share = prefix / "share/kdbts_ros"
    for folder in ("launch", "config", "rviz"):
        shipped = sorted(p.name for p in (ROOT / folder).iterdir())
        assert sorted(p.name for p in (share / folder).iterdir()) == shipped, folder
    assert (share / "msg/DensityGrid.msg").read_text() == (ROOT / "msg/DensityGrid.msg").read_text()
    package = prefix / f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages/kdbts_ros"
    assert (package / "msg/_density_grid.py").is_file()
    assert list(package.glob("kdbts_ros_s__rosidl_typesupport_fastrtps_c*.so"))
    for weights in (ROOT / "kdbts_ros/weights").glob("*.safetensors"):
        assert (package / "weights" / weights.name).read_bytes() == weights.read_bytes()
    march = ROOT / "kdbts_ros/core/model/march.c"  # compiled at first use on the robot
    assert (package / "core/model/march.c").read_bytes() == march.read_bytes()


def _sourced(workspace: Path, command: str) -> subprocess.CompletedProcess:
    """``command`` in bash after ``source install/setup.bash``, run outside the checkout."""
    return subprocess.run(
        ["bash", "-c", f"source {workspace}/install/setup.bash && {command}"],
        cwd=workspace,
        env=_ros_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sourced_workspace_serves_the_installed_package_and_its_message(workspace):
    probe = (
        "import kdbts_ros; from kdbts_ros.msg import DensityGrid; "
        "from rclpy.serialization import deserialize_message, serialize_message; "
        "from ament_index_python.packages import get_package_share_directory as share; "
        "m = DensityGrid(size_x=3, head='mv'); back = deserialize_message(serialize_message(m), DensityGrid); "
        "print(kdbts_ros.__file__, share('kdbts_ros'), back.size_x, back.head)"
    )
    run = _sourced(workspace, f'python -c "{probe}"')
    assert run.returncode == 0, run.stderr
    module, share, size_x, head = run.stdout.split()
    install = workspace / "install" / "kdbts_ros"
    assert Path(module).is_relative_to(install) and Path(share) == install / "share/kdbts_ros"
    assert (size_x, head) == ("3", "mv")


def test_installed_executable_starts_and_refuses_a_bad_parameter(workspace):
    run = _sourced(workspace, "install/kdbts_ros/lib/kdbts_ros/kdbts_node --ros-args -p window_size:=0")
    assert run.returncode == EXIT_USER, run.stdout + run.stderr
    assert "[kdbts_node]: cannot start: parameter window_size" in run.stderr and "out of range" in run.stderr
