"""The grid a planner reads: axis-aligned in a planar frame (REP-103: x forward, y left, z up).

nav2 reads only ``origin.position`` of an OccupancyGrid, so the grid's cells must lie along its
frame's axes (identity orientation) and its height band must be measured from the ground, not
from a camera that may pitch and yaw. The cells are the columns of a lattice in that frame: x and
y at the cell centres, ``levels`` heights evenly in [ground_z + z_min, ground_z + z_max]; the
density field is queried at those points (seen through the camera) and each column becomes an
occupancy value as :func:`~kdbts_ros.core.grids.bev_occupancy` makes it. Points nearer to the
camera than it renders (``z_near``) are unknown, never free.

In a base frame (base_link) the window sits where its extents say, moving with the robot. In the
fixed frame (the fallback when TF has no base frame) it is a square of the same reach centred on
the camera's position, so that it covers what the camera sees whichever way it faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdbts_ros.core.config import PlannerGridConfig


@dataclass(frozen=True)
class PlanarGridSpec:
    """A planner grid's lattice in its frame: the lower corner, cell sizes and counts."""

    x0: float  # outer corner of cell (0, 0) in the frame, metres
    y0: float
    z0: float  # the band's bottom: ground_z + z_min
    resolution: float
    resolution_z: float
    size_x: int
    size_y: int
    size_z: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """(size_z, size_y, size_x): height, then the OccupancyGrid's rows (y) and columns (x)."""
        return self.size_z, self.size_y, self.size_x

    def centres(self) -> np.ndarray:
        """Cell centres (size_z, size_y, size_x, 3) in the grid's frame."""
        x = self.x0 + (np.arange(self.size_x) + 0.5) * self.resolution
        y = self.y0 + (np.arange(self.size_y) + 0.5) * self.resolution
        z = self.z0 + (np.arange(self.size_z) + 0.5) * self.resolution_z
        gz, gy, gx = np.meshgrid(z, y, x, indexing="ij")
        return np.stack([gx, gy, gz], -1)

    def origin(self) -> np.ndarray:
        """4x4 pose of the OccupancyGrid's origin in its frame: cell (0, 0)'s outer corner, identity orientation."""
        T = np.eye(4)
        T[:3, 3] = (self.x0, self.y0, self.z0)
        return T


def planar_spec(g: PlannerGridConfig, centre_xy: np.ndarray | None = None) -> PlanarGridSpec:
    """The lattice of ``g`` in a base frame (``centre_xy`` None), or in the fixed frame as a square of the same reach
    centred on ``centre_xy`` (the camera's position there), its corner on the resolution's lattice so that cells
    stay put while the camera moves."""
    dz = (g.z_max - g.z_min) / g.levels
    if centre_xy is None:
        x0, y0 = g.x_min, g.y_min
        nx, ny = round((g.x_max - g.x_min) / g.resolution), round((g.y_max - g.y_min) / g.resolution)
    else:
        reach = max(abs(g.x_min), abs(g.x_max), abs(g.y_min), abs(g.y_max))
        x0, y0 = (np.floor((np.asarray(centre_xy, float) - reach) / g.resolution) * g.resolution).tolist()
        nx = ny = round(2 * reach / g.resolution) + 1
    return PlanarGridSpec(x0, y0, g.ground_z + g.z_min, g.resolution, dz, max(1, nx), max(1, ny), g.levels)


def near_field(centres_cam: np.ndarray, z_near: float) -> np.ndarray:
    """Which points (..., 3) in the camera frame lie nearer along its axis than the camera renders (or behind it)."""
    return centres_cam[..., 2] < z_near


@dataclass(frozen=True)
class PlannerGrid:
    """A frame's occupancy grid for planners, as the OccupancyGrid message carries it."""

    values: np.ndarray  # (size_y, size_x) int8 percent, -1 unknown; row-major from the origin cell
    frame_id: str
    origin: np.ndarray  # 4x4 pose of cell (0, 0)'s outer corner in frame_id
    resolution: float
    forward_is_x: bool  # a base frame: columns run forward; else rows run along +y (drawn upwards)
    # (3,) the ground under the planner frame's origin, in the fixed frame: the world map's band rests on it
    ground: np.ndarray

    def bird_rows(self) -> np.ndarray:
        """The values as the camera slab's bird's-eye view holds them: row 0 the nearest (or lowest y), columns from
        left to right seen from above with forward (or +y) up."""
        return self.values.T[:, ::-1] if self.forward_is_x else self.values
