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

    def points_level(self) -> np.ndarray:
        """Query points (y_levels, nz, nx, 3) in the level frame (x-z plane parallel to the road); z runs far to
        near.
        """
        nx = round((self.x_range[1] - self.x_range[0]) * self.points_per_m)
        nz = round((self.z_range[1] - self.z_range[0]) * self.points_per_m)
        y = self.level_centres()
        z = np.linspace(self.z_range[1], self.z_range[0], nz)
        x = np.linspace(*self.x_range, nx)
        gy, gz, gx = np.meshgrid(y, z, x, indexing="ij")
        return np.stack([gx, gy, gz], -1)

    def level_bands(self) -> np.ndarray:
        """(y_levels, 2) lower and upper y of the band each level stands for ([0, 0.75] for one level)."""
        edges = np.linspace(*self.y_range, self.y_levels + 1)
        return np.stack([edges[:-1], edges[1:]], 1)

    def level_centres(self) -> np.ndarray:
        """Height of each y level: the centre of its band (0.375 for one level)."""
        return self.level_bands().mean(1)

    def R_cam_level(self) -> np.ndarray:
        """3x3 rotation of level-frame points into the pitched camera (the inverse of ``cam_incl_adjust``)."""
        a = np.deg2rad(self.pitch_deg)
        return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])

    def points_cam(self) -> np.ndarray:
        """Query points (y_levels, nz, nx, 3) in the camera frame; z runs far to near as the official grid."""
        return self.points_level() @ self.R_cam_level().T


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
