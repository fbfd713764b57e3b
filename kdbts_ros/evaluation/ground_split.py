"""Which ground-truth pixels stand off the road (cars, walls, poles, trees) and which lie on it.

The road is a plane fitted to the frame's own lidar scan (RANSAC, open3d's ``segment_plane``), so
the split holds for any camera height and pitch. A ground-truth pixel is *off the ground* when its
depth is nearer than the road plane along its ray by more than :data:`OFF_GROUND_MARGIN`, or its
ray never meets the road ahead (at or above the horizon); every other pixel is *road*.
"""

from __future__ import annotations

import math

import numpy as np
import open3d as o3d

OFF_GROUND_MARGIN = 0.25  # nearer than the road by more than this share of the road's depth
# road candidates in the camera frame: ahead (z), not far to the side (|x|), below the camera (y points down)
CANDIDATE_Z = (2.0, 40.0)
CANDIDATE_HALF_WIDTH = 15.0
CANDIDATE_BELOW = 0.5
MAX_TILT_DEG = 20.0  # a fitted plane tilted more than this from the camera's horizontal is no road
RANSAC_DISTANCE = 0.08  # metres from the plane an inlier may lie (a road's roughness and the scan's noise)
RANSAC_ITERATIONS = 500
MIN_CANDIDATES = 50


def road_plane(points_cam: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """The road under a camera: (a, b, c, d) with a x + b y + c z + d = 0, the unit normal pointing up
    (b < 0, y down) and d > 0 (the camera above the road); None when the scan shows no road.

    ``points_cam`` (N, 3): the frame's scan in the camera frame.
    """
    p = np.asarray(points_cam, np.float64)
    z_min, z_max = CANDIDATE_Z
    keep = (p[:, 2] > z_min) & (p[:, 2] < z_max) & (np.abs(p[:, 0]) < CANDIDATE_HALF_WIDTH)
    keep &= p[:, 1] > CANDIDATE_BELOW
    if keep.sum() < MIN_CANDIDATES:
        return None
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p[keep]))
    o3d.utility.random.seed(seed)  # RANSAC draws its samples: one answer per scan
    plane, inliers = cloud.segment_plane(RANSAC_DISTANCE, 3, RANSAC_ITERATIONS)
    plane = np.asarray(plane, np.float64)
    plane /= np.linalg.norm(plane[:3])
    if plane[1] > 0:
        plane = -plane
    if len(inliers) < MIN_CANDIDATES or -plane[1] < math.cos(math.radians(MAX_TILT_DEG)) or plane[3] <= 0:
        return None
    return plane


def road_depth(rays: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """Camera z-depth (N,) at which unit-z rays (N, 3) meet the road plane; inf where they never do ahead."""
    down = -(rays @ plane[:3])  # how fast the ray nears the plane per metre of z (the camera is above it)
    with np.errstate(divide="ignore"):
        return np.where(down > 1e-9, plane[3] / np.maximum(down, 1e-12), np.inf)


def off_ground(gt: np.ndarray, road: np.ndarray, margin: float = OFF_GROUND_MARGIN) -> np.ndarray:
    """Which ground-truth depths (N,) stand off the road: nearer than its depth ``road`` (N,) by more than
    ``margin`` of it (every depth where the ray never meets the road)."""
    return gt < (1.0 - margin) * road
