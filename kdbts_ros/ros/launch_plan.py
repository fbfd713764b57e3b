"""What the launch files start, decided from their arguments before anything starts.

Kept out of the launch files so it runs (and is tested) without the launch stack: the
parameter file a ``config:=`` names, the node's namespace, name and remappings, the nodes of
``two_cameras.launch.py``, the ``ros2 bag play`` command with one clock source, the RViz
configuration for the parameter file's frame and topics, and the tools that must be installed.
Anything that cannot work raises :class:`LaunchError` with the reason, on one line.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from kdbts_ros.core.settings import ConfigError, load_config
from kdbts_ros.messages.bag_info import bag_storage, bag_topics, has_clock
from kdbts_ros.messages.topics import DIAGNOSTICS, NODE_NAME, OUTPUTS, TopicsConfig, output_topics, resolver
from kdbts_ros.ros.config import NodeConfig

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


# a namespace of tokens (letters, digits, underscores, not starting with a digit) and a node name
_NAMESPACE = re.compile(r"/?([A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*/?)?")
_NODE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class NodePlan:
    """One kdbts_node to start: where, under which name, with which remappings and configuration."""

    namespace: str  # fully qualified: "/" or "/front"
    name: str
    remappings: tuple[tuple[str, str], ...]
    config: NodeConfig  # as the node reads its parameter file: its sections, topics resolved

    @property
    def fully_qualified_name(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.name}"


def parse_remappings(value: str) -> tuple[tuple[str, str], ...]:
    """``remappings:=`` as (from, to) pairs: ``from:=to`` items separated by spaces or commas."""
    pairs = []
    for item in value.replace(",", " ").split():
        source, sep, target = item.partition(":=")
        if not sep or not source or not target:
            raise LaunchError(f"remappings:={value}: {item!r} is not from:=to; nothing was started")
        pairs.append((source, target))
    return tuple(pairs)


def node_plan(params_file: Path, namespace: str = "", name: str = NODE_NAME, remappings: str = "") -> NodePlan:
    """The node ``namespace``/``name`` started with ``params_file`` and ``remappings``, checked before it starts.

    Its configuration is what it reads of the file (the ``/**`` section and its own), with every
    topic resolved as the node will resolve it.
    """
    if not _NAMESPACE.fullmatch(namespace):
        raise LaunchError(f"namespace:={namespace} is not a ROS namespace; nothing was started")
    if not _NODE_NAME.fullmatch(name):
        raise LaunchError(f"name:={name} is not a ROS node name; nothing was started")
    ns = "/" + namespace.strip("/")
    pairs = parse_remappings(remappings)
    try:
        cfg = load_config(NodeConfig, params_file, node=f"{ns.rstrip('/')}/{name}")
    except ConfigError as exc:  # it names the file
        raise LaunchError(f"config:= {exc}; nothing was started") from exc
    cfg.topics = cfg.topics.resolved(resolver(ns, name, pairs))
    return NodePlan(ns, name, pairs, cfg)


def camera_nodes(params_file: Path, namespaces: str, name: str = NODE_NAME) -> list[NodePlan]:
    """One node per namespace of ``namespaces`` (comma separated), each reading its own section of
    ``params_file``; they must read different cameras and publish different topics."""
    plans = [node_plan(params_file, ns, name) for ns in namespaces.replace(",", " ").split()]
    if len(plans) < 2:
        raise LaunchError(f"cameras:={namespaces} names fewer than two namespaces; nothing was started")
    for i, a in enumerate(plans):
        for b in plans[:i]:
            if a.namespace == b.namespace:
                raise LaunchError(f"cameras:={namespaces} names {a.namespace} twice; nothing was started")
            shared = set(a.config.topics.images) & set(b.config.topics.images)
            shared |= output_topics(a.config.topics) & output_topics(b.config.topics) - {DIAGNOSTICS}
            if shared:
                raise LaunchError(
                    f"{b.fully_qualified_name} and {a.fully_qualified_name} would both use "
                    f"{', '.join(sorted(shared))} (config:={params_file}); give each its own topics"
                )
    return plans


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


def rviz_config(template: dict, plan: NodePlan) -> dict:
    """The RViz configuration ``template`` (written for the default parameters) for a node's frame and topics.

    The fixed frame becomes the node's ``fixed_frame``; each display of a default topic (as a node
    without a namespace has it) shows the topic the node uses instead (the first camera's image,
    the node's outputs), in its namespace and after its remappings.
    """
    default, ours = TopicsConfig().resolved(), plan.config.topics
    renamed = {default.images[0]: ours.images[0]}
    renamed.update({o.topic(default): o.topic(ours) for o in OUTPUTS})
    out = yaml.safe_load(yaml.safe_dump(template))  # a deep copy of plain data
    manager = out["Visualization Manager"]
    manager["Global Options"]["Fixed Frame"] = plan.config.fixed_frame
    for display in manager["Displays"]:
        topic = display.get("Topic")
        if isinstance(topic, dict) and topic.get("Value") in renamed:
            topic["Value"] = renamed[topic["Value"]]
    return out


def write_rviz_config(template_file: Path, plan: NodePlan, params_file: Path, out_dir: Path) -> Path:
    """Write ``rviz_config`` of the template for the planned node into ``out_dir``; returns the file."""
    text = yaml.safe_dump(rviz_config(yaml.safe_load(template_file.read_text()), plan), sort_keys=False)
    out = out_dir / f"kdbts_{params_file.stem}.rviz"
    out.write_text(text)
    return out
