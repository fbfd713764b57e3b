"""``kdbts viz``: input, depth and bird's-eye density profile of one image in one PNG (paper Figs. 4-5)."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .config import PipelineConfig
from .core.camera import pixel_intrinsics
from .core.grids import ProfileSpec, density_profile
from .core.model.network import DensityField, Views
from .core.pipeline import Pipeline
from .demo import depth_png

# normalised intrinsics of the official defaults (fx', fy', cx', cy'); 5 deg camera pitch on KITTI-360
PRESETS = {"kitti360": ((0.7849, 2.9391, -0.0312, 0.2701), 5.0),
           "kitti_raw": ((1.1619, 3.8482, -0.0184, -0.0781), 0.0)}


def preset_intrinsics(name: str, width: int, height: int) -> np.ndarray:
    """Pixel intrinsics of a preset for an image of the given size."""
    fx, fy, cx, cy = PRESETS[name][0]
    return pixel_intrinsics(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), width, height)


def profile_picture(profile: np.ndarray) -> np.ndarray:
    """BGR magma picture of a density profile, min-max normalised as the official figures."""
    norm = (profile - profile.min()) / max(float(np.ptp(profile)), 1e-6)
    return cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)


def query_profile(model: DensityField, views: Views, head: str, chunk_points: int,
                  spec: ProfileSpec = ProfileSpec()) -> np.ndarray:
    """The Fig. 4 density profile (z, x) of a head, on the grid of view 0's camera."""
    device = views.features.device
    pts = torch.as_tensor(spec.points_cam().reshape(1, -1, 3), dtype=torch.float32, device=device)
    sigma, invalid = model.query(pts, views, head, chunk_points)
    shape = (spec.res_y, spec.res_xz, spec.res_xz)
    return density_profile(sigma[0].float().cpu().numpy().reshape(shape),
                           invalid[0, :, 0].cpu().numpy().reshape(shape))


def render_figure(cfg: PipelineConfig, rgb: np.ndarray, K: np.ndarray, head: str = "sv",
                  pitch_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (h, w), profile (256, 256) and the stacked BGR picture for one RGB image."""
    pipeline = Pipeline(cfg)
    with pipeline.precision():
        return _render_figure(pipeline, rgb, K, head, pitch_deg)


def _render_figure(pipeline: Pipeline, rgb: np.ndarray, K: np.ndarray, head: str,
                   pitch_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cfg, model, device = pipeline.cfg, pipeline.model, pipeline.device
    H, W = pipeline.input_size
    img, image01, Kn = pipeline.prepare(rgb, K)
    views = Views(model.encode(image01)[:, None], Kn[None, None], torch.eye(4, device=device)[None, None])
    depth, _ = pipeline.render_depth_image(views, head, Kn)
    profile = query_profile(model, views, head, cfg.model.chunk_points, ProfileSpec(pitch_deg=pitch_deg))
    prof_img = profile_picture(profile)
    left = np.vstack([cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                      cv2.resize(depth_png(depth, cfg.model.z_near, cfg.model.z_far), (W, H),
                                 interpolation=cv2.INTER_NEAREST)])
    side = left.shape[0]
    picture = np.hstack([left, cv2.resize(prof_img, (side, side), interpolation=cv2.INTER_NEAREST)])
    return depth, profile, picture
