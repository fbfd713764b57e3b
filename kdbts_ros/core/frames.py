"""What goes into the pipeline and what comes out of it, in plain arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kdbts_ros.core.grids import GridSpec


@dataclass
class Frame:
    """One camera image with what is known about it."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    K: np.ndarray | None  # 3x3 pixel intrinsics of `image` (rectified: camera_info P)
    stamp_ns: int
    frame_id: str  # the optical frame, whatever its name
    T_fixed_cam: np.ndarray | None = None


@dataclass
class Outputs:
    """Everything published for one frame, in plain arrays."""

    stamp_ns: int
    camera_frame: str
    out_frame: str  # fixed frame when posed, else the camera frame
    T_out_cam: np.ndarray
    spec: GridSpec
    density: np.ndarray  # (size_z, size_y, size_x) float32, NaN where unseen
    unseen: np.ndarray  # (size_z, size_y, size_x) bool: cells no view saw (their density means nothing)
    occupancy: np.ndarray | None  # (size_y, size_x) int8
    points: np.ndarray  # (M, 3) float32 in out_frame
    point_density: np.ndarray  # (M,) float32
    point_rgb: np.ndarray  # (M, 3) uint8
    depth: np.ndarray | None  # (h, w) float32 metres (camera z)
    depth_K: np.ndarray | None  # pixel intrinsics of the depth image
    head: str
    num_views: int
    stage_times: dict[str, float] = field(default_factory=dict)  # seconds of resize, encode, grid and depth
