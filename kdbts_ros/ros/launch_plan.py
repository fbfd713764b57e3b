"""What ``launch/kdbts.launch.py`` starts, decided from its arguments before anything starts.

Kept out of the launch file so it runs (and is tested) without the launch stack: the
parameter file a ``config:=`` names, the ``ros2 bag play`` command with one clock source,
the RViz configuration for the parameter file's frame and topics, and the tools that must
be installed. Anything that cannot work raises :class:`LaunchError` with the reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from kdbts_ros.core.settings import load_config
from kdbts_ros.messages.bag_info import bag_storage, bag_topics, has_clock
from kdbts_ros.messages.topics import OUTPUTS, TopicsConfig
from kdbts_ros.ros.config import NodeConfig
from kdbts_ros.runtime.config import RunnerConfig

# rosbag2 storage identifier -> the plugin package ``ros2 bag play`` loads for it
STORAGE_PLUGINS = {"mcap": "rosbag2_storage_mcap", "sqlite3": "rosbag2_storage_sqlite3"}


class LaunchError(RuntimeError):
    """An argument or a missing tool that would make the launch fail; said before anything starts."""


def resolve_config(value: str, config_dir: Path) -> Path:
    """The parameter file ``config:=`` names: a path, or a preset of ``config_dir`` by name (``kitti_raw``)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    for candidate in (config_dir / value, config_dir / f"{value}.yaml"):
        if "/" not in value and candidate.is_file():
            return candidate
    presets = ", ".join(sorted(p.stem for p in config_dir.glob("*.yaml") if not p.stem.startswith("train_")))
    raise LaunchError(f"config:={value} is neither a file nor a preset of {config_dir} ({presets})")


def bag_play_command(bag: str) -> list[str]:
    """``ros2 bag play`` with one clock source: the bag's own /clock if it has one, else ``--clock``."""
    try:
        topics = bag_topics(bag)
    except Exception as exc:  # rosbags raises its own errors for unreadable bags
        raise LaunchError(f"bag:={bag} cannot be read: {exc}") from exc
    # two clocks (the bag's /clock and --clock's) step sim time back and forth; RViz resets on that
    return ["ros2", "bag", "play", bag] + ([] if has_clock(topics) else ["--clock"])


def package_prefix(package: str) -> Path | None:
    """Install prefix of a ROS package (the ament index that launch_ros's lookups read), or None."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return None
    try:
        return Path(get_package_prefix(package))
    except PackageNotFoundError:
        return None


def require_rviz() -> None:
    """Raise LaunchError unless rviz2 is installed."""
    prefix = package_prefix("rviz2")
    if prefix is None or not (prefix / "lib" / "rviz2" / "rviz2").is_file():
        raise LaunchError("rviz:=true but rviz2 is not installed (apt install ros-jazzy-rviz2); nothing was started")


def require_bag_player(bag: str) -> None:
    """Raise LaunchError unless ``ros2 bag play`` and the storage plugin of this bag are installed."""
    if Path(bag).suffix == ".bag":
        raise LaunchError(
            f"bag:={bag} is a ROS 1 bag, which ros2 bag play cannot read: convert it (rosbags-convert "
            f"--src {bag} --dst DIR) or replay it offline (kdbts replay {bag} OUT); nothing was started"
        )
    if shutil.which("ros2") is None or package_prefix("ros2bag") is None:
        raise LaunchError("bag:= needs `ros2 bag` (apt install ros-jazzy-rosbag2); nothing was started")
    plugin = STORAGE_PLUGINS.get(bag_storage(bag))
    if plugin is not None and package_prefix(plugin) is None:
        raise LaunchError(
            f"bag:={bag} is {bag_storage(bag)}, which needs {plugin} "
            f"(apt install ros-jazzy-{plugin.replace('_', '-')}); nothing was started"
        )


def rviz_config(template: dict, cfg: RunnerConfig) -> dict:
    """The RViz configuration ``template`` (written for the default parameters) for ``cfg``'s frame and topics.

    The fixed frame becomes ``cfg.fixed_frame``; each display of a default topic shows the
    topic ``cfg`` names instead (the first camera's image, the node's outputs).
    """
    default, ours = TopicsConfig(), cfg.topics
    renamed = {default.images[0]: ours.images[0]}
    renamed.update({o.topic(default): o.topic(ours) for o in OUTPUTS})
    out = yaml.safe_load(yaml.safe_dump(template))  # a deep copy of plain data
    manager = out["Visualization Manager"]
    manager["Global Options"]["Fixed Frame"] = cfg.fixed_frame
    for display in manager["Displays"]:
        topic = display.get("Topic")
        if isinstance(topic, dict) and topic.get("Value") in renamed:
            topic["Value"] = renamed[topic["Value"]]
    return out


def write_rviz_config(template_file: Path, params_file: Path, out_dir: Path) -> Path:
    """Write ``rviz_config`` of the template for the parameter file into ``out_dir``; returns the file."""
    try:
        cfg = load_config(NodeConfig, params_file)
    except ValueError as exc:
        raise LaunchError(f"config:={params_file}: {exc}") from exc
    text = yaml.safe_dump(rviz_config(yaml.safe_load(template_file.read_text()), cfg), sort_keys=False)
    out = out_dir / f"kdbts_{params_file.stem}.rviz"
    out.write_text(text)
    return out
