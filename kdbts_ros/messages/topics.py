"""The topics the node reads and writes: their settings (``topics.*``) and the one table of outputs.

:data:`OUTPUTS` says for each output topic its setting, message type, what computes it, what
switches it on and its QoS; the runner's messages (:mod:`kdbts_ros.messages.published`), the map
stage, the node's publishers and the topics a replay leaves out of its input are all read from it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from kdbts_ros.core.settings import setting
from kdbts_ros.messages.cdr import DENSITY_GRID, IMAGE

# the node's diagnostics topic, the one output that is not a setting (diagnostic_aggregator reads it there)
DIAGNOSTICS = "/diagnostics"


@dataclass
class TopicsConfig:
    """Topic names; all remappable at launch as well."""

    images: list[str] = setting(
        ["/camera/image_raw"],
        "input image topic of each camera, the first one the camera "
        "the outputs are made for; a topic ending in /compressed is read as "
        "sensor_msgs/CompressedImage (jpeg, png), any other as sensor_msgs/Image",
    )
    camera_infos: list[str] = setting(
        ["/camera/camera_info"], "sensor_msgs/CameraInfo topic of each camera, in the order of topics.images"
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
    occupancy: str = setting("/kdbts/occupancy", "output nav_msgs/OccupancyGrid")
    points: str = setting("/kdbts/points", "output sensor_msgs/PointCloud2")
    depth: str = setting(
        "/kdbts/depth/image",
        "output sensor_msgs/Image 32FC1 metres along the optical axis (REP 118), NaN where not seen or not "
        "terminated within range (render.min_opacity)",
    )
    depth_info: str = setting(
        "/kdbts/depth/camera_info",
        "output CameraInfo of the camera the depth image is in (beside it, as image_transport expects)",
    )
    depth_confidence: str = setting(
        "depth/confidence",
        "output sensor_msgs/Image 32FC1 in [0, 1] beside the depth image, pixel for pixel: the opacity of "
        "its ray (render.min_opacity)",
    )
    density_grid: str = setting("/kdbts/density_grid", "output kdbts_ros/DensityGrid")
    latency: str = setting("/kdbts/latency", "output std_msgs/Float64: seconds from the image stamp to the publish")
    map: str = setting(
        "/kdbts/map",
        "output nav_msgs/OccupancyGrid of the fused 2-D map (map.enabled), transient local "
        "so a late planner or RViz gets the last one",
    )
    map_points: str = setting(
        "/kdbts/map_points", "output sensor_msgs/PointCloud2 of the fused map's occupied voxels (map.enabled)"
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
