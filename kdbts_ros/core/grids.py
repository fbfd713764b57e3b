"""The camera-aligned grid: cell centres, bird's-eye occupancy and occupied voxels.

Grid frame: x across (camera x, right), y forward (camera z), z up (camera -y).
Its lower corner sits at camera (x_min, y_max, z_min): y_max is the lowest
height level because camera y points down. Arrays are indexed [iz, iy, ix]
(height, forward, across), so flattening them gives the DensityGrid and
OccupancyGrid row-major order ``ix + size_x * (iy + size_y * iz)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from kdbts_ros.core.config import GridConfig

# Rotation whose columns are the grid axes expressed in the camera frame.
R_CAM_GRID = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class GridSpec:
    """Sizes and placement of the grid derived from a :class:`GridConfig`."""

    x_min: float
    y_max: float
    z_min: float
    resolution: float
    resolution_z: float
    size_x: int
    size_y: int
    size_z: int

    @classmethod
    def from_config(cls, g: GridConfig) -> GridSpec:
        """Whole cells covering the configured extent (the far edges are rounded to cells)."""
        size_x, size_y = g.cells_across_forward()
        return cls(
            g.x_min,
            g.y_max,
            g.z_min,
            g.resolution,
            (g.y_max - g.y_min) / g.height_levels,
            size_x,
            size_y,
            g.height_levels,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(size_z, size_y, size_x): height, forward, across."""
        return self.size_z, self.size_y, self.size_x

    def T_cam_grid(self) -> np.ndarray:
        """4x4 pose of the grid's lower corner in the camera frame."""
        T = np.eye(4)
        T[:3, :3] = R_CAM_GRID
        T[:3, 3] = (self.x_min, self.y_max, self.z_min)
        return T

    @functools.cache  # noqa: B019 - specs are few, frozen and hashable; the node asks for the same one every frame
    def centres_cam(self) -> np.ndarray:
        """Cell centres in the camera frame, (size_z, size_y, size_x, 3); read-only, shared between calls."""
        ix = (np.arange(self.size_x) + 0.5) * self.resolution
        iy = (np.arange(self.size_y) + 0.5) * self.resolution
        iz = (np.arange(self.size_z) + 0.5) * self.resolution_z
        gz, gy, gx = np.meshgrid(iz, iy, ix, indexing="ij")
        local = np.stack([gx, gy, gz], -1)
        centres = local @ R_CAM_GRID.T + self.T_cam_grid()[:3, 3]
        centres.flags.writeable = False
        return centres


def bev_occupancy(density: np.ndarray, invalid: np.ndarray, dz: float) -> np.ndarray:
    """OccupancyGrid values (size_y, size_x) int8 from densities (size_z, size_y, size_x).

    A column's value is the probability, in percent, that a vertical ray through
    the height band is stopped: 100 (1 - exp(-sum sigma dz)) over the levels a
    camera saw; -1 (unknown) where no level of the column was seen.
    """
    seen = ~invalid
    optical_depth = np.where(seen, density, 0.0).sum(0) * dz
    value = np.rint(100.0 * (1.0 - np.exp(-optical_depth))).astype(np.int8)
    value[~seen.any(0)] = -1
    return value


def occupied_voxels(
    centres: np.ndarray, density: np.ndarray, invalid: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Centres (M, 3) and densities (M,) of seen voxels whose density exceeds the threshold."""
    keep = (~invalid) & (density > threshold)
    return centres[keep], density[keep]


def point_colours(points_cam: np.ndarray, Kn: np.ndarray, image: np.ndarray) -> np.ndarray:
    """RGB (M, 3) of an image at each camera-frame point's projection (nearest pixel); Kn normalised intrinsics."""
    if len(points_cam) == 0:
        return np.zeros((0, 3), np.uint8)
    H, W = image.shape[:2]
    uvz = points_cam @ Kn.T
    xy = uvz[:, :2] / uvz[:, 2:3]
    # normalised coordinates use the align_corners=False convention of feature sampling
    u = np.clip(np.floor((xy[:, 0] + 1) * W / 2), 0, W - 1).astype(int)
    v = np.clip(np.floor((xy[:, 1] + 1) * H / 2), 0, H - 1).astype(int)
    return image[v, u]


@dataclass(frozen=True)
class ProfileSpec:
    """The paper's density-profile volume (Fig. 4 caption: x [-9, 9], y [0, 1], z [3, 23] m)."""

    x_range: tuple[float, float] = (-9.0, 9.0)
    y_range: tuple[float, float] = (0.0, 1.0)
    z_range: tuple[float, float] = (3.0, 23.0)
    res_xz: int = 256
    res_y: int = 64
    pitch_deg: float = 0.0  # KITTI-360: 5, the camera's tilt to the road (official cam_incl_adjust)

    def points_cam(self) -> np.ndarray:
        """Sample points (res_y, res_xz z far->near, res_xz x) in the camera frame."""
        y = np.linspace(*self.y_range, self.res_y)
        z = np.linspace(self.z_range[1], self.z_range[0], self.res_xz)  # row 0 = far, the top of the picture
        x = np.linspace(*self.x_range, self.res_xz)
        gy, gz, gx = np.meshgrid(y, z, x, indexing="ij")
        pts = np.stack([gx, gy, gz], -1)
        a = np.deg2rad(self.pitch_deg)
        R = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        return pts @ R.T


def density_profile(density: np.ndarray, invalid: np.ndarray, budget: float = 8.0) -> np.ndarray:
    """Bird's-eye profile (z, x) in [0, 1] from densities (y, z, x) sampled top-down.

    As the official figures: unseen points count as density 1, densities are
    summed down the column without step weighting, and the value is the share
    of levels reached before the sum exceeds ``budget`` (1 = free all the way).
    """
    sigma = np.where(invalid, 1.0, density)
    return (np.cumsum(sigma, axis=0) <= budget).sum(0) / sigma.shape[0]
