"""The launch file, RViz config and package manifests name things that exist.

Without the launch packages (pip environments) the launch file cannot be run,
so its references are checked statically: the executable, files, topics and
parameters it and the RViz config name; where launch and launch_ros are installed,
the launch file plans its actions with them. What it decides is tested in test_launch_plan.py.
"""

import ast
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from kdbts_ros.core.settings import iter_params
from kdbts_ros.messages.topics import TopicsConfig
from kdbts_ros.ros.config import NodeConfig

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch/kdbts.launch.py"


TWO_CAMERAS = ROOT / "launch/two_cameras.launch.py"


def _constants(launch: Path = LAUNCH) -> dict[str, object]:
    tree = ast.parse(launch.read_text())
    return {
        t.id: ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }


def test_launch_file_names_existing_files_executable_and_parameters():
    c = _constants()
    assert c["PACKAGE"] == ET.parse(ROOT / "package.xml").getroot().findtext("name")
    assert (ROOT / Path(*c["RVIZ_CONFIG"])).is_file() and (ROOT / Path(*c["DEFAULT_CONFIG"])).is_file()
    # the executable is installed by CMake (colcon) and by setup.py (pip)
    assert f"tools/{c['EXECUTABLE']}" in (ROOT / "CMakeLists.txt").read_text()
    assert (ROOT / "tools" / c["EXECUTABLE"]).is_file()
    assert f"{c['EXECUTABLE']} = kdbts_ros.ros.node:main" in (ROOT / "setup.py").read_text()
    names = {s.name for s in iter_params(NodeConfig())}
    text = LAUNCH.read_text()
    for param in re.findall(r'"(model\.[a-z_]+)"', text):
        assert param in names
    args = ("config", "checkpoint", "namespace", "name", "remappings", "autostart", "use_sim_time", "rviz", "bag")
    for arg in args:
        assert re.search(rf'DeclareLaunchArgument\(\s*"{arg}"', text), arg


def test_two_cameras_launch_file_names_the_same_node_and_its_own_config():
    one, two = _constants(), _constants(TWO_CAMERAS)
    assert (two["PACKAGE"], two["EXECUTABLE"]) == (one["PACKAGE"], one["EXECUTABLE"])
    config = ROOT / Path(*two["DEFAULT_CONFIG"])
    text = TWO_CAMERAS.read_text()
    # the default config:= is the shipped file, by its preset name
    assert re.search(rf'"config",\s*default_value="{config.stem}"', text) and config.is_file()
    for arg in ("config", "cameras", "checkpoint", "autostart", "use_sim_time"):
        assert re.search(rf'DeclareLaunchArgument\(\s*"{arg}"', text), arg


def test_rviz_config_shows_the_node_outputs():
    rviz = yaml.safe_load((ROOT / "rviz/kdbts.rviz").read_text())["Visualization Manager"]
    topics = {d["Name"]: d["Topic"]["Value"] for d in rviz["Displays"] if "Topic" in d}
    t = TopicsConfig().resolved()  # RViz needs fully qualified names: a node's without a namespace
    # each display on its own output, and nothing else subscribed
    assert topics == {
        "Occupancy (bird's-eye)": t.occupancy,
        "Occupied voxels": t.points,
        "Depth": t.depth,
        "Camera": t.images[0],
        "Camera with overlays": t.images[0],
        "World map": t.map,
        "World map voxels": t.map_points,
    }
    world_map = next(d for d in rviz["Displays"] if d["Name"] == "World map")
    assert world_map["Topic"]["Durability Policy"] == "Transient Local"  # the node's map is latched
    assert rviz["Global Options"]["Fixed Frame"] == NodeConfig().fixed_frame


def _ament_prefix(root: Path, packages: dict[str, Path | None]) -> Path:
    """An ament prefix registering ``packages``; a path value becomes the package's share folder."""
    index = root / "share/ament_index/resource_index/packages"
    index.mkdir(parents=True)
    for package, share in packages.items():
        (index / package).touch()
        if share is not None:
            (root / "share" / package).symlink_to(share)
    return root


def test_launch_file_with_the_launch_stack_plans_one_clock_and_checks_tools_first(tmp_path, monkeypatch):
    pytest.importorskip("launch")
    pytest.importorskip("launch_ros")
    import importlib.util

    from launch.actions import DeclareLaunchArgument
    from launch.utilities import perform_substitutions
    from test_launch_plan import _bag

    from kdbts_ros.ros.launch_plan import LaunchError
    from launch import LaunchContext

    prefix = _ament_prefix(tmp_path / "prefix", {"kdbts_ros": ROOT, "ros2bag": None, "rosbag2_storage_mcap": None})
    (prefix / "bin").mkdir()
    (prefix / "bin/ros2").write_text("#!/bin/sh\n")
    (prefix / "bin/ros2").chmod(0o755)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    monkeypatch.setenv("PATH", f"{prefix / 'bin'}:{os.environ['PATH']}")
    spec = importlib.util.spec_from_file_location("kdbts_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    context = LaunchContext()
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            context.launch_configurations[entity.name] = perform_substitutions(context, entity.default_value)
    bag = _bag(tmp_path / "bag", clock=True)
    context.launch_configurations.update(bag=bag, config="kitti_gray")
    node, play = module._actions(context)
    assert node.node_executable == "kdbts_node"
    assert [perform_substitutions(context, part) for part in play.cmd] == ["ros2", "bag", "play", bag]
    context.launch_configurations["rviz"] = "true"  # rviz2 is not in the prefix: nothing is planned
    with pytest.raises(LaunchError, match="rviz2 is not installed"):
        module._actions(context)
