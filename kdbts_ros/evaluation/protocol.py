"""Where the occupancy protocol queries the field, and which query points the camera sees."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OccupancyProtocol:
    """The KITTI-360 occupancy query area in the (pitch-adjusted) camera frame.

    Official: x in [-4, 4] m and z in [4, 20] m at 10 points per metre (80 x 160,
    ``linspace``), one height slice at y = 0.375 m below the camera (y range
    [0, 0.75] with one level), camera pitched 5 deg to the road on KITTI-360.
    """

    x_range: tuple[float, float] = (-4.0, 4.0)
    z_range: tuple[float, float] = (4.0, 20.0)
    y_range: tuple[float, float] = (0.0, 0.75)
    y_levels: int = 1
    points_per_m: int = 10
    pitch_deg: float = 0.0  # KITTI-360: 5 (cam_incl_adjust); synthetic rigs are level

    def points_cam(self) -> np.ndarray:
        """Query points (y_levels, nz, nx, 3) in the camera frame; z runs far to near as the official grid."""
        nx = int(round((self.x_range[1] - self.x_range[0]) * self.points_per_m))
        nz = int(round((self.z_range[1] - self.z_range[0]) * self.points_per_m))
        step = (self.y_range[1] - self.y_range[0]) / self.y_levels
        y = self.y_range[0] + step * (np.arange(self.y_levels) + 0.5)  # level centres: 0.375 for one level
        z = np.linspace(self.z_range[1], self.z_range[0], nz)
        x = np.linspace(*self.x_range, nx)
        gy, gz, gx = np.meshgrid(y, z, x, indexing="ij")
        pts = np.stack([gx, gy, gz], -1)
        a = np.deg2rad(self.pitch_deg)
        R = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        return pts @ R.T


def visible_from_depth(points_cam: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Points (N, 3) in front of the ground-truth surface at their nearest pixel (z-depth map, pixel K).

    A point outside the image or behind the camera is not visible.
    """
    H, W = depth.shape
    z = points_cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.rint(K[0, 0] * points_cam[:, 0] / z + K[0, 2])
        v = np.rint(K[1, 1] * points_cam[:, 1] / z + K[1, 2])
    inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    out = np.zeros(len(points_cam), bool)
    idx = np.nonzero(inside)[0]
    out[idx] = z[idx] < depth[v[idx].astype(int), u[idx].astype(int)]
    return out
