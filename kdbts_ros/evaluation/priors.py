"""Depth priors that know no image: the baselines a trained network must beat on real frames.

Each prior gives a camera z-depth per pixel from the camera's intrinsics alone and, for the
occupancy protocol, counts a point as occupied when it lies behind that surface (what a
depth-only method would say about space it cannot see).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConstantDepth:
    """Every pixel at the same depth (metres; 15 m lies near KITTI's median lidar depth, it is not fitted)."""

    depth_m: float = 15.0

    @property
    def name(self) -> str:
        return f"constant depth {self.depth_m:g} m"

    def depth(self, rows: np.ndarray, cols: np.ndarray, K: np.ndarray) -> np.ndarray:
        return np.full(len(rows), self.depth_m)

    def occupied(self, points_cam: np.ndarray) -> np.ndarray:
        return points_cam[:, 2] > self.depth_m


@dataclass(frozen=True)
class FlatRoad:
    """A flat road ``height_m`` below a level camera and a wall ``wall_m`` ahead above the horizon (and beyond it)."""

    height_m: float = 1.65  # KITTI's camera height above the road
    wall_m: float = 30.0

    @property
    def name(self) -> str:
        return f"flat road {self.height_m:g} m below, wall at {self.wall_m:g} m"

    def depth(self, rows: np.ndarray, cols: np.ndarray, K: np.ndarray) -> np.ndarray:
        down = (rows - K[1, 2]) / K[1, 1]  # the ray's y per metre of z (y points down)
        with np.errstate(divide="ignore"):
            road = np.where(down > 0, self.height_m / np.maximum(down, 1e-12), np.inf)
        return np.minimum(road, self.wall_m)

    def occupied(self, points_cam: np.ndarray) -> np.ndarray:
        return (points_cam[:, 1] > self.height_m) | (points_cam[:, 2] > self.wall_m)


DepthPrior = ConstantDepth | FlatRoad
PRIORS: tuple[DepthPrior, ...] = (ConstantDepth(), FlatRoad())
