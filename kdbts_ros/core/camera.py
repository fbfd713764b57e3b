"""Camera arithmetic of the network and the rendering, on tensors: projection with normalised intrinsics
(:func:`kdbts_ros.core.lens.normalise_intrinsics`; x right, y down, z forward) and the depth image's rays.
"""

from __future__ import annotations

import numpy as np
import torch

# Depth below which a point counts as behind the camera (official EPS).
Z_EPS = 1e-3


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def to_camera(w2c: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Points (..., N, 3) mapped by the rigid transform (..., 4, 4) of their batch, in fp32 even under autocast.

    Batch dimensions broadcast. A bf16 matmul would move a point 20 m away by centimetres.
    """
    with torch.autocast(points.device.type, enabled=False):
        w2c, points = _at_least_fp32(w2c), _at_least_fp32(points)
        # one (N, 3) x (3, 3) product per batch, not a 3x3 product per point
        return points @ w2c[..., :3, :3].transpose(-1, -2) + w2c[..., None, :3, 3]


def project(points_cam: torch.Tensor, Kn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project camera-frame points (..., N, 3) with the normalised K' (..., 3, 3) of their batch, in fp32.

    Batch dimensions broadcast. Returns normalised image coordinates xy (..., N, 2),
    camera depth z (..., N, 1) and an invalid mask (..., N) that is true behind the
    camera or outside [-1, 1].
    """
    with torch.autocast(points_cam.device.type, enabled=False):
        uvz = _at_least_fp32(points_cam) @ _at_least_fp32(Kn).transpose(-1, -2)
    z = uvz[..., 2:3]
    xy = uvz[..., :2] / z.clamp_min(Z_EPS)
    invalid = (z[..., 0] <= Z_EPS) | (xy.abs() > 1).any(-1)
    return xy, z, invalid


def ray_grid(Kn: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Camera-frame ray directions with unit z for every pixel, (H, W, 3).

    The official ray generator spaces pixels with ``linspace(-1, 1, W)`` (the
    align_corners=True convention) while features are sampled with
    align_corners=False; we keep that half-pixel difference for parity.
    """
    ys = torch.linspace(-1, 1, height, dtype=Kn.dtype, device=Kn.device)
    xs = torch.linspace(-1, 1, width, dtype=Kn.dtype, device=Kn.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    dx = (gx - Kn[0, 2]) / Kn[0, 0]
    dy = (gy - Kn[1, 2]) / Kn[1, 1]
    return torch.stack([dx, dy, torch.ones_like(dx)], -1)


def ray_pixel_intrinsics(Kn: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel intrinsics that describe the rays of :func:`ray_grid` for a width x height image.

    With the linspace grid, pixel i sits at normalised coordinate -1 + 2 i / (W - 1),
    so the published depth image's camera_info must use these intrinsics.
    """
    K = np.eye(3, dtype=np.float64)
    K[0, 0] = Kn[0, 0] * (width - 1) / 2.0
    K[1, 1] = Kn[1, 1] * (height - 1) / 2.0
    K[0, 2] = (Kn[0, 2] + 1.0) * (width - 1) / 2.0
    K[1, 2] = (Kn[1, 2] + 1.0) * (height - 1) / 2.0
    return K
