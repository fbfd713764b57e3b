"""The node's configuration: the runner's settings plus those only the node reads (QoS, lifecycle, TF store).

Imports no rclpy, so ``kdbts params`` and the launch plan read it without a ROS install.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdbts_ros.core.settings import setting
from kdbts_ros.runtime.config import RunnerConfig


@dataclass
class PublishConfig:
    """Output toggles (the ``switch`` of :data:`kdbts_ros.messages.topics.OUTPUTS`) and their reliability.

    An output nobody subscribes to is not computed either way.
    """

    occupancy: bool = setting(True, "publish the bird's-eye OccupancyGrid", runtime=True)
    points: bool = setting(True, "publish the occupied-voxel PointCloud2", runtime=True)
    depth: bool = setting(True, "publish the depth image and its camera_info", runtime=True)
    depth_confidence: bool = setting(True, "publish the depth image's confidence", runtime=True)
    density_grid: bool = setting(True, "publish the full 3D DensityGrid", runtime=True)
    latency: bool = setting(True, "publish the latency of each processed frame", runtime=True)
    reliable: bool = setting(True, "publish outputs reliable (false: best effort)")
    occupancy_latched: bool = setting(
        True,
        "publish the per-frame OccupancyGrid transient-local (latched), as nav2's static layer subscribes; "
        "volatile subscribers connect too; false: volatile, like the other per-frame outputs",
    )


@dataclass
class NodeConfig(RunnerConfig):
    """Every parameter of ``kdbts_node``: :class:`RunnerConfig` plus the node's own settings."""

    tf_builtin: bool = setting(False, "use the built-in TF buffer even when tf2_ros is installed")
    input_reliable: bool = setting(False, "subscribe to inputs reliable (default best effort)")
    autostart: bool = setting(
        True, "node: configure and activate the lifecycle node at start-up (false: wait for a lifecycle manager)"
    )
    publish: PublishConfig = field(default_factory=PublishConfig)
