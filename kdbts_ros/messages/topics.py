"""The topics the node reads and writes: their settings (``topics.*``) and the one table of outputs.

:data:`OUTPUTS` says for each output topic its setting, message type, what computes it, what
switches it on and its QoS; the runner's messages (:mod:`kdbts_ros.messages.published`), the map
stage, the node's publishers and the topics a replay leaves out of its input are all read from it.

Topic names are relative by default, so that they resolve under the node's namespace: the outputs
are ``kdbts/...`` (a node in ``/front`` publishes ``/front/kdbts/occupancy``) and the camera is
``camera/image_raw`` beside ``camera/camera_info``. The node fully qualifies them as rclpy does
(namespace and remappings, :meth:`TopicsConfig.resolved` with its resolver); the offline tools
(replay, demo, benchmarks) have no namespace and take them in the root one (:func:`qualified`):
``/kdbts/occupancy`` and ``/camera/image_raw``, the names a node started without a namespace uses.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

from kdbts_ros.core.settings import setting
from kdbts_ros.messages.cdr import DENSITY_GRID, IMAGE

# the node's diagnostics topic, the one output that is not a setting (diagnostic_aggregator reads it there)
DIAGNOSTICS = "/diagnostics"

# the node's name unless launched with another (``~/`` names are under it)
NODE_NAME = "kdbts_node"

# a ROS 2 topic name without substitutions: optional ~ (private) or / (absolute), then tokens of
# letters, digits and underscores that do not start with a digit, separated by single slashes
_TOPIC_NAME = re.compile(r"(~/|/)?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*|~")


def qualified(name: str, namespace: str = "/", node_name: str = NODE_NAME) -> str:
    """``name`` fully qualified as ROS 2 expands a topic of node ``node_name`` in ``namespace``.

    An absolute name stays as it is, a private one (``~/x``) goes under the node, any other under
    the namespace. The offline tools use the default: the root namespace (``kdbts/map`` is ``/kdbts/map``).
    """
    base = namespace.rstrip("/")
    if name.startswith("/"):
        return name
    if name == "~" or name.startswith("~/"):
        return f"{base}/{node_name}{name[1:]}"
    return f"{base}/{name}"


def resolver(
    namespace: str = "/", node_name: str = NODE_NAME, remappings: Collection[tuple[str, str]] = ()
) -> Callable[[str], str]:
    """Topic names fully qualified as rcl resolves them for a node: :func:`qualified`, then the first
    remapping ``(from, to)`` whose ``from`` names the same topic (both sides resolved for that node)."""

    def resolve(name: str) -> str:
        full = qualified(name, namespace, node_name)
        for source, target in remappings:
            if qualified(source, namespace, node_name) == full:
                return qualified(target, namespace, node_name)
        return full

    return resolve


@dataclass
class TopicsConfig:
    """Topic names; all remappable at launch as well.

    Relative names resolve under the node's namespace, ``~/`` ones under the node's name; the
    offline tools take them in the root namespace.
    """

    images: list[str] = setting(
        ["camera/image_raw"],
        "input image topic of each camera, the first one the camera "
        "the outputs are made for; a topic ending in /compressed is read as "
        "sensor_msgs/CompressedImage (jpeg, png), any other as sensor_msgs/Image; relative names "
        "(this one, and every topic below) resolve under the node's namespace: a driver in <namespace>/camera",
    )
    camera_infos: list[str] = setting(
        ["camera/camera_info"], "sensor_msgs/CameraInfo topic of each camera, in the order of topics.images"
    )
    image_geometry: str = setting(
        "auto",
        "what the images are: rectified (seen through camera_info's P, no distortion), raw (through K and D "
        "in their distortion model: plumb_bob, rational_polynomial or equidistant), or auto (rectified for a "
        "topic whose name contains 'rect', as image_proc's image_rect, else raw)",
        choices=("auto", "rectified", "raw"),
    )
    mono16_bits: int = setting(
        16,
        "significant bits of mono16 images, of which the network sees the top 8: 16 divides by 256 as "
        "cv_bridge's mono16 to mono8 does; 12 for a 12-bit sensor (values 0-4095), 10 for a 10-bit one",
        8,
        16,
    )
    camera_frame: str = setting(
        "",
        "TF frame of the first camera's images, used in place of their header.frame_id when that "
        "frame is not in the TF tree (kitti2bag odometry bags: images in camera_gray_left, TF "
        "camera_left); empty: the images' own frame",
    )
    occupancy: str = setting("kdbts/occupancy", "output nav_msgs/OccupancyGrid")
    points: str = setting("kdbts/points", "output sensor_msgs/PointCloud2")
    depth: str = setting(
        "kdbts/depth/image",
        "output sensor_msgs/Image 32FC1 metres along the optical axis (REP 118), NaN where not seen or not "
        "terminated within range (render.min_opacity)",
    )
    depth_info: str = setting(
        "kdbts/depth/camera_info",
        "output CameraInfo of the camera the depth image is in (beside it, as image_transport expects)",
    )
    depth_confidence: str = setting(
        "kdbts/depth/confidence",
        "output sensor_msgs/Image 32FC1 in [0, 1] beside the depth image, pixel for pixel: the opacity of "
        "its ray (render.min_opacity)",
    )
    density_grid: str = setting("kdbts/density_grid", "output kdbts_ros/DensityGrid")
    latency: str = setting("kdbts/latency", "output std_msgs/Float64: seconds from the image stamp to the publish")
    map: str = setting(
        "kdbts/map",
        "output nav_msgs/OccupancyGrid of the fused 2-D map (map.enabled), transient local "
        "so a late planner or RViz gets the last one",
    )
    map_points: str = setting(
        "kdbts/map_points", "output sensor_msgs/PointCloud2 of the fused map's occupied voxels (map.enabled)"
    )

    def check(self) -> None:
        """The cameras' topics pair up and differ; raises ValueError."""
        if not self.images or len(self.images) != len(self.camera_infos):
            raise ValueError(
                f"topics.images ({len(self.images)}) and topics.camera_infos ({len(self.camera_infos)}) "
                "must name the same number of cameras, at least one"
            )
        if len(set(self.images + self.camera_infos)) != 2 * len(self.images):
            raise ValueError("topics.images and topics.camera_infos must all differ")
        for key, name in self._names():
            if not _TOPIC_NAME.fullmatch(name):
                raise ValueError(
                    f"topics.{key}: {name!r} is not a ROS 2 topic name (tokens of letters, digits and "
                    "underscores, not starting with a digit, separated by single slashes; ~/ for private)"
                )

    def _names(self) -> list[tuple[str, str]]:
        """(setting, name) of every topic name: the cameras' inputs and the outputs."""
        inputs = [("images", n) for n in self.images] + [("camera_infos", n) for n in self.camera_infos]
        return inputs + [(o.key, o.topic(self)) for o in OUTPUTS]

    def resolved(self, resolve: Callable[[str], str] = qualified) -> TopicsConfig:
        """A copy with every topic name fully qualified by ``resolve``.

        The node passes rclpy's resolver (its namespace, name and remappings); the default takes
        relative names in the root namespace, as the offline tools do. Fully qualified names stay.
        """
        out = dataclasses.replace(
            self, images=[resolve(n) for n in self.images], camera_infos=[resolve(n) for n in self.camera_infos]
        )
        for o in OUTPUTS:
            setattr(out, o.key, resolve(o.topic(self)))
        return out

    def is_rectified(self, image_topic: str) -> bool:
        """Whether a camera's images are rectified (``topics.image_geometry``; auto: by the topic's name)."""
        name = image_topic.removesuffix("/compressed").rsplit("/", 1)[-1]
        return self.image_geometry == "rectified" or (self.image_geometry == "auto" and "rect" in name)


# what computes an output: grid / depth the pipeline for each frame (the bird's-eye grid, the
# depth render), map the runner's map stage at map.publish_rate, latency the node as it publishes
Stage = Literal["grid", "depth", "map", "latency"]


@dataclass(frozen=True)
class Output:
    """One output topic of the node."""

    key: str  # its setting: topics.<key>
    msgtype: str
    stage: Stage
    switch: str  # the boolean setting that turns it on (a publish.* toggle of the node, or map.enabled)
    # QoS transient local, depth 1, reliable: the last message is kept for late subscribers, and it is
    # made whether or not anyone subscribes yet; otherwise volatile (depth 5, reliability publish.reliable)
    latched: bool = False

    def topic(self, topics: TopicsConfig) -> str:
        """The topic name ``topics`` gives this output."""
        name: str = getattr(topics, self.key)
        return name


# in the order a frame's messages are written (a replay's bag keeps it)
OUTPUTS = (
    Output("occupancy", "nav_msgs/msg/OccupancyGrid", "grid", "publish.occupancy"),
    Output("density_grid", DENSITY_GRID, "grid", "publish.density_grid"),
    Output("points", "sensor_msgs/msg/PointCloud2", "grid", "publish.points"),
    Output("depth", IMAGE, "depth", "publish.depth"),
    Output("depth_info", "sensor_msgs/msg/CameraInfo", "depth", "publish.depth"),
    Output("depth_confidence", IMAGE, "depth", "publish.depth_confidence"),
    Output("latency", "std_msgs/msg/Float64", "latency", "publish.latency"),
    Output("map", "nav_msgs/msg/OccupancyGrid", "map", "map.enabled", latched=True),
    Output("map_points", "sensor_msgs/msg/PointCloud2", "map", "map.enabled"),
)
OUTPUT = {o.key: o for o in OUTPUTS}


def output_topics(topics: TopicsConfig) -> set[str]:
    """Every topic the node publishes, diagnostics included."""
    return {o.topic(topics) for o in OUTPUTS} | {DIAGNOSTICS}


def stages_wanted(topics: TopicsConfig, wanted: Collection[str] | None = None) -> tuple[bool, bool]:
    """Whether the grid and the depth image are needed for the ``wanted`` output topics (None: all of them)."""
    if wanted is None:
        return True, True

    def needed(stage: Stage) -> bool:
        return any(o.topic(topics) in wanted for o in OUTPUTS if o.stage == stage)

    return needed("grid"), needed("depth")
