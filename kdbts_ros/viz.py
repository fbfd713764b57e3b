"""``kdbts viz``: input, depth and bird's-eye density profile of one image in one PNG (paper Figs. 4-5)."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .config import PipelineConfig
from .core.camera import normalise_intrinsics, pixel_intrinsics, ray_grid
from .core.grids import ProfileSpec, density_profile
from .core.model.network import Views
from .core.model.render import render_depth
from .core.pipeline import build_model, pick_device
from .demo import depth_png

# normalised intrinsics of the official defaults (fx', fy', cx', cy'); 5 deg camera pitch on KITTI-360
PRESETS = {"kitti360": ((0.7849, 2.9391, -0.0312, 0.2701), 5.0),
           "kitti_raw": ((1.1619, 3.8482, -0.0184, -0.0781), 0.0)}


def preset_intrinsics(name: str, width: int, height: int) -> np.ndarray:
    """Pixel intrinsics of a preset for an image of the given size."""
    fx, fy, cx, cy = PRESETS[name][0]
    return pixel_intrinsics(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), width, height)


@torch.inference_mode()
def render_figure(cfg: PipelineConfig, rgb: np.ndarray, K: np.ndarray, head: str = "sv",
                  pitch_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (H, W), profile (256, 256) and the stacked BGR picture for one RGB image."""
    device = pick_device(cfg.model.device)
    model, _ = build_model(cfg)
    model = model.to(device).eval()
    H, W = cfg.model.image_height, cfg.model.image_width
    img = cv2.resize(rgb, (W, H), interpolation=cv2.INTER_LINEAR)
    Kn = torch.as_tensor(normalise_intrinsics(K, rgb.shape[1], rgb.shape[0]), dtype=torch.float32, device=device)
    views = Views(model.encode(torch.from_numpy(img).to(device).permute(2, 0, 1)[None].float() / 255)[:, None],
                  Kn[None, None], torch.eye(4, device=device)[None, None])
    fn = lambda p: model.density(p[None], views, head)[0][0]  # noqa: E731
    h, w = max(1, round(H * cfg.render.depth_scale)), max(1, round(W * cfg.render.depth_scale))
    depth = render_depth(fn, ray_grid(Kn, h, w).reshape(-1, 3), cfg.render.samples, cfg.model.z_near,
                         cfg.model.z_far, cfg.model.chunk_points).cpu().numpy().reshape(h, w)
    spec = ProfileSpec(pitch_deg=pitch_deg)
    pts = torch.as_tensor(spec.points_cam().reshape(1, -1, 3), dtype=torch.float32, device=device)
    sigma, invalid = model.query(pts, views, head, cfg.model.chunk_points)
    shape = (spec.res_y, spec.res_xz, spec.res_xz)
    profile = density_profile(sigma[0].cpu().numpy().reshape(shape), invalid[0, :, 0].cpu().numpy().reshape(shape))
    # the official figures min-max normalise the profile before the magma colour map
    norm = (profile - profile.min()) / max(float(np.ptp(profile)), 1e-6)
    prof_img = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)
    left = np.vstack([cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                      cv2.resize(depth_png(depth, cfg.model.z_near, cfg.model.z_far), (W, H),
                                 interpolation=cv2.INTER_NEAREST)])
    side = left.shape[0]
    picture = np.hstack([left, cv2.resize(prof_img, (side, side), interpolation=cv2.INTER_NEAREST)])
    return depth, profile, picture
