"""The figure of one image (input, depth, bird's-eye density profile; paper Figs. 4-5) with the configured network,
and the camera presets ``kdbts viz`` assumes for an image file without intrinsics."""

from __future__ import annotations

import numpy as np

from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.lens import KITTI_360, KITTI_RAW, Lens, pixel_intrinsics
from kdbts_ros.core.stages import Stages
from kdbts_ros.runtime.pictures import Figure, figure

# normalised intrinsics of the official defaults (fx', fy', cx', cy'); 5 deg camera pitch on KITTI-360
PRESETS = {"kitti360": (KITTI_360, 5.0), "kitti_raw": (KITTI_RAW, 0.0)}


def preset_intrinsics(name: str, width: int, height: int) -> np.ndarray:
    """Pixel intrinsics of a preset for an image of the given size."""
    fx, fy, cx, cy = PRESETS[name][0]
    return pixel_intrinsics(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), width, height)


def render_figure(
    cfg: PipelineConfig, rgb: np.ndarray, K: np.ndarray, head: str = "sv", pitch_deg: float = 0.0
) -> Figure:
    """Depth (H, W), profile (256, 256) and the BGR figure of one RGB image, with the configured network."""
    return figure(Stages(cfg), rgb, Lens.pinhole(K, rgb.shape[1], rgb.shape[0]), head, pitch_deg)
