"""The world map seen from above: a height band of the voxel window projected to a 2-D occupancy grid.

The band is measured from the ground, as the planner grid's is (:mod:`kdbts_ros.core.planar_grid`), not
from the camera, so a camera that pitches or bounces does not move the obstacles in and out of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kdbts_ros.core.world_map import WorldMap


@dataclass(frozen=True)
class Grid2D:
    """A 2-D occupancy map: values (ny, nx) int8 (-1 unknown, 0..100 percent), row 0 at the lowest y.

    ``origin`` is the fixed-frame position of cell (0, 0)'s outer corner, axes along the fixed
    frame's x and y (nav_msgs/OccupancyGrid's layout: ``data[iy * width + ix]``).
    """

    data: np.ndarray
    resolution: float
    origin: tuple[float, float, float]


def occupancy_2d(
    wmap: WorldMap, ground_z: float, min_z: float | None = None, max_z: float | None = None
) -> Grid2D | None:
    """The window's columns over a height band above the ground (default ``map.min_z`` .. ``max_z``).

    ``ground_z``: the ground's height in the map's gravity-aligned frame. A column's value is the
    highest occupancy probability (percent) of its known voxels in the band, -1 where none of them
    is known. None before the first frame.
    """
    if wmap.origin is None:
        return None
    cfg, r = wmap.cfg, wmap.resolution
    min_z = cfg.min_z if min_z is None else min_z
    max_z = cfg.max_z if max_z is None else max_z
    lo = math.floor((ground_z + min_z) / r) - wmap.origin[2]
    hi = math.floor((ground_z + max_z) / r) - wmap.origin[2]
    lo, hi = max(lo, 0), min(hi, wmap.shape[0] - 1)
    data = np.full(wmap.shape[1:], -1, np.int8)
    if lo <= hi:
        band = wmap.log_odds[lo : hi + 1]
        known = (band != 0).any(0)
        top = np.where(band != 0, band, -np.inf).max(0)[known]
        data[known] = np.rint(100.0 / (1.0 + np.exp(-top))).astype(np.int8)
    origin = (float(wmap.origin[0] * r), float(wmap.origin[1] * r), float(ground_z + min_z))
    return Grid2D(data, r, origin)
