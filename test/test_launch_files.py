"""The launch file, RViz config and package manifests name things that exist.

Without the launch packages (pip environments) the launch file cannot be run,
so its references are checked statically: the executable, files, topics and
parameters it and the RViz config name.
"""
import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from kdbts_ros.config import PipelineConfig, iter_params

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch/kdbts.launch.py"


def _constants() -> dict[str, object]:
    tree = ast.parse(LAUNCH.read_text())
    return {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
            for t in n.targets if isinstance(t, ast.Name)}


def test_launch_file_names_existing_files_executable_and_parameters():
    c = _constants()
    assert c["PACKAGE"] == ET.parse(ROOT / "package.xml").getroot().findtext("name")
    assert (ROOT / Path(*c["RVIZ_CONFIG"])).is_file() and (ROOT / Path(*c["DEFAULT_CONFIG"])).is_file()
    # the executable is installed by CMake (colcon) and by setup.py (pip)
    assert f"tools/{c['EXECUTABLE']}" in (ROOT / "CMakeLists.txt").read_text()
    assert (ROOT / "tools" / c["EXECUTABLE"]).is_file()
    assert f"{c['EXECUTABLE']} = kdbts_ros.ros.node:main" in (ROOT / "setup.py").read_text()
    names = {s.name for s in iter_params(PipelineConfig())}
    text = LAUNCH.read_text()
    for param in re.findall(r'"(model\.[a-z_]+)"', text):
        assert param in names
    for arg in ("config", "checkpoint", "use_sim_time", "rviz", "bag"):
        assert f'DeclareLaunchArgument("{arg}"' in text


def test_rviz_config_shows_the_node_outputs():
    rviz = yaml.safe_load((ROOT / "rviz/kdbts.rviz").read_text())["Visualization Manager"]
    topics = {d["Topic"]["Value"] for d in rviz["Displays"] if "Topic" in d}
    t = PipelineConfig().topics
    assert {t.occupancy, t.points, t.depth, t.images[0]} <= topics
    assert rviz["Global Options"]["Fixed Frame"] == PipelineConfig().fixed_frame


def test_package_xml_declares_the_runtime_dependencies():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    for key in ("rclpy", "sensor_msgs", "nav_msgs", "geometry_msgs", "tf2_ros", "tf2_msgs", "diagnostic_msgs",
                "visualization_msgs", "cv_bridge", "sensor_msgs_py", "rosidl_default_generators",
                "rosidl_default_runtime", "python3-numpy", "python3-torch"):
        assert key in deps, key
