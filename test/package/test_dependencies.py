"""Each dependency declared is used and each used is declared: package.xml, requirements, pyproject.toml, README.

What is used is read from the imports of the package, the launch file and the node executable;
a new import fails here until it is declared everywhere it belongs.
"""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
# Python libraries by import: (rosdep key, or None where rosdep has none; pip requirement)
PYTHON = {
    "torch": ("python3-torch", "torch"),
    "numpy": ("python3-numpy", "numpy"),
    "scipy": ("python3-scipy", "scipy"),
    "cv2": ("python3-opencv", "opencv-python-headless"),
    "yaml": ("python3-yaml", "pyyaml"),
    "rosbags": ("python3-rosbags-pip", "rosbags"),
    "tqdm": ("python3-tqdm", "tqdm"),
    "safetensors": (None, "safetensors"),
    # no rosdep key could be confirmed for open3d (apt has python3-open3d on some releases only)
    "open3d": (None, "open3d"),
    "torch.utils.tensorboard": (None, "tensorboard"),
    # rosdep has no key for mcap itself; mcap-ros2-support depends on it
    "mcap": ("mcap-ros2-support", "mcap"),
    # the ONNX export and the onnxruntime backend (core/model/export.py, onnx_backend.py); no rosdep keys
    "onnx": (None, "onnx"),
    "onnxruntime": (None, "onnxruntime"),
}
# installed with a declared library and imported only through it: mcap's chunk decompressors
PROVIDED = {"zstandard": "mcap", "lz4": "mcap"}
# every other import is a ROS package, declared by its name; these have no ros-jazzy wheel on PyPI
NOT_ON_PYPI = {
    "tf2_msgs": "built from tools/interfaces by tools/build_msgs.sh",
    "tf2_ros": "optional: the built-in TF buffer stands in",
    "launch": "launch file only",
    "launch_ros": "launch file only",
}
# declared, but not for an import: building msg/
NOT_IMPORTED = {
    "ament_cmake",
    "ament_cmake_python",
    "rosidl_default_generators",
    "rosidl_default_runtime",
    "builtin_interfaces",
}
# what launch arguments start (rviz:=true, bag:=), which a robot does without: named, not declared
OPTIONAL_TOOLS = {"rviz2", "ros2bag", "rosbag2_storage_mcap"}


def _imports() -> set[str]:
    sources = [p for p in (ROOT / "kdbts_ros").rglob("*.py") if "msg" not in p.relative_to(ROOT).parts[1:2]]
    sources += [*(ROOT / "launch").glob("*.py"), ROOT / "tools/kdbts_node"]
    names = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                names.add(module.split(".")[0])
                if module in PYTHON:
                    names.add(module)
    return {n for n in names if n not in sys.stdlib_module_names and n != "kdbts_ros" and n not in PROVIDED}


def _package_xml() -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text for e in root if e.tag in ("depend", "exec_depend", "buildtool_depend")}


def _requirements(text: str) -> set[str]:
    """Distribution names of requirement lines."""
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    return {re.split(r"[\[<>=]", line)[0] for line in lines if line}


def _pip_name(ros_package: str) -> str:
    return "ros-jazzy-" + ros_package.replace("_", "-")


def test_every_import_is_declared_and_every_declaration_imported():
    used = _imports()
    python = used & set(PYTHON)
    ros = {m for m in used - python if m not in {p.split(".")[0] for p in PYTHON}}
    assert set(PYTHON) <= used, f"stale entries: {set(PYTHON) - used}"
    declared = _package_xml()
    rosdep = {PYTHON[m][0] for m in python if PYTHON[m][0]}
    assert rosdep | ros <= declared, f"used, not in package.xml: {(rosdep | ros) - declared}"
    assert declared <= rosdep | ros | NOT_IMPORTED, (
        f"in package.xml, not used: {declared - rosdep - ros - NOT_IMPORTED}"
    )
    pip = {PYTHON[m][1] for m in python}
    assert _requirements((ROOT / "requirements.txt").read_text()) == pip
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _requirements("\n".join(project["dependencies"])) == pip
    runtime_wheels = (ROOT / "requirements-ros.txt").read_text().split("# build of msg/")[0]
    assert _requirements(runtime_wheels) == {_pip_name(p) for p in ros if p not in NOT_ON_PYPI}


def test_readme_rosdep_line_names_what_rosdep_cannot_install():
    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if "rosdep install" in line)
    named = set(re.search(r"pip install ([\w\- ]+)", line)[1].split())
    assert named == {pip for key, pip in PYTHON.values() if key is None}


def test_rviz_and_rosbag2_are_optional_and_said_so_in_the_manifest():
    declared = {e.text for e in ET.parse(ROOT / "package.xml").getroot().iter() if e.tag.endswith("depend")}
    assert not declared & OPTIONAL_TOOLS
    comments = " ".join(re.findall(r"<!--(.*?)-->", (ROOT / "package.xml").read_text(), re.S))
    assert all(tool in comments for tool in OPTIONAL_TOOLS)
