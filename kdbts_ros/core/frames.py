"""What goes into the core's stages and what comes out of them: a frame, its encoding and its outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kdbts_ros.core.grids import GridSpec
from kdbts_ros.core.lens import Lens
from kdbts_ros.core.planar_grid import PlannerGrid

if TYPE_CHECKING:  # frames are plain data: importing them loads no torch
    import torch


@dataclass
class Frame:
    """One camera image with what is known about it."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    K: np.ndarray | None  # 3x3 pixel intrinsics of `image` (rectified: camera_info P)
    stamp_ns: int
    frame_id: str  # the optical frame, whatever its name
    T_fixed_cam: np.ndarray | None = None
    camera: Lens | None = None  # the image's lens with its distortion; None: a pinhole of K

    def lens(self) -> Lens:
        """The image's lens: ``camera``, else the undistorted camera of K at the image's size."""
        if self.camera is not None:
            return self.camera
        assert self.K is not None, "a frame is seen through its lens or its intrinsics"
        return Lens.pinhole(self.K, self.image.shape[1], self.image.shape[0])


@dataclass
class EncodedFrame:
    """One encoded image: its features, normalised intrinsics, pose in the fixed frame and folded head maps."""

    stamp_ns: int
    features: torch.Tensor  # (C, H, W)
    Kn: torch.Tensor  # (3, 3)
    T_fixed_cam: np.ndarray | None
    planes: dict[str, torch.Tensor] = field(default_factory=dict)  # head -> folded map (model/folded.py)
    camera: str = ""  # the image's optical frame
    valid: torch.Tensor | None = None  # (H, W) bool: the pixels its camera sees; None: all of them


@dataclass
class Outputs:
    """Everything published for one frame, in plain arrays."""

    stamp_ns: int
    camera_frame: str
    out_frame: str  # fixed frame when posed, else the camera frame
    T_out_cam: np.ndarray
    spec: GridSpec
    density: np.ndarray  # (size_z, size_y, size_x) float32, finite: 0 where unseen
    unseen: np.ndarray  # spec.shape bool: cells the camera does not see (their density means nothing)
    occupancy: np.ndarray | None  # (size_y, size_x) int8
    planner: PlannerGrid | None  # the occupancy grid in the planner's frame (planner.*), when posed
    points: np.ndarray  # (M, 3) float32 in out_frame
    point_density: np.ndarray  # (M,) float32
    point_rgb: np.ndarray  # (M, 3) uint8
    depth: np.ndarray | None  # (h, w) float32 metres (camera z), NaN where not seen or not terminated within range
    depth_lens: Lens | None  # the camera the depth image is in (render.depth_camera)
    depth_confidence: np.ndarray | None  # (h, w) float32 in [0, 1]: each depth ray's opacity, 0 where not seen
    head: str
    num_views: int
    stage_times: dict[str, float] = field(default_factory=dict)  # seconds of resize, encode, grid and depth
