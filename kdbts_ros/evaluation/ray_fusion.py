"""Range data fused into a :class:`WorldMap` as rays, for the map evaluation: depth images and lidar scans.

Each ray marks the voxels it crosses free, every half voxel, and its end occupied; a ray longer
than ``map.max_range`` frees space up to that range and marks no hit (octomap's maxrange). Hits
win over misses within one frame, as in :meth:`WorldMap.integrate`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from kdbts_ros.core.world_map import WorldMap, pose_problem, transform

RAY_CHUNK_SAMPLES = 1 << 20  # samples along rays held at once


def ray_samples(
    origin: np.ndarray, ends: np.ndarray, resolution: float, max_range: float
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of (points (N, 3), occupied (N,)): the free samples along each ray, then the rays' ends as hits.

    The rays are walked in chunks of at most RAY_CHUNK_SAMPLES samples, rays of similar length
    together (little padding).
    """
    step = 0.5 * resolution
    vec = ends - origin
    length = np.linalg.norm(vec, axis=1)
    ok = length > 1e-6
    vec, length, ends = vec[ok], length[ok], ends[ok]
    if len(ends) == 0:
        return
    direction = vec / length[:, None]
    hit = length <= max_range
    length = np.minimum(length, max_range)
    order = np.argsort(length)
    max_steps = math.ceil(length.max() / step)
    per_chunk = max(1, RAY_CHUNK_SAMPLES // max(max_steps, 1))
    for s in range(0, len(order), per_chunk):
        idx = order[s : s + per_chunk]
        steps = math.ceil(length[idx].max() / step)
        t = (np.arange(steps) + 0.5) * step
        valid = t[None, :] < length[idx, None]
        free = (origin + direction[idx, None, :] * t[None, :, None])[valid]
        yield free, np.zeros(len(free), bool)
    yield ends[hit], np.ones(int(hit.sum()), bool)


def integrate_depth(
    wmap: WorldMap,
    depth: np.ndarray,
    K: np.ndarray,
    T_fixed_cam: np.ndarray | None,
    stamp_ns: int | None = None,
    stride: int = 1,
) -> str | None:
    """Fuse a depth image (camera z, metres; pixel (u, v) looks along K^-1 (u, v, 1)) as rays from the camera.

    Non-finite or non-positive depths are ignored. Returns None when fused, else the reason the
    frame was skipped.
    """

    def samples() -> Iterator[tuple[np.ndarray, np.ndarray]]:  # read by fuse_samples once the pose is accepted
        T = np.asarray(T_fixed_cam, np.float64)
        d = np.asarray(depth, np.float64)[::stride, ::stride]
        h, w = d.shape
        v, u = np.mgrid[0:h, 0:w]
        rays = (
            np.stack([u * stride, v * stride, np.ones_like(u)], -1).reshape(-1, 3).astype(np.float64)
            @ np.linalg.inv(K).T
        )
        z = d.reshape(-1)
        keep = np.isfinite(z) & (z > 0)
        ends = transform(T, rays[keep] * z[keep, None])
        yield from ray_samples(T[:3, 3], ends, wmap.resolution, wmap.cfg.max_range)

    return wmap.fuse_samples(T_fixed_cam, samples(), stamp_ns)


def integrate_points(
    wmap: WorldMap,
    points: np.ndarray,
    sensor_origin: np.ndarray,
    stamp_ns: int | None = None,
    T_fixed_cam: np.ndarray | None = None,
) -> str | None:
    """Fuse returns (N, 3) in the fixed frame seen from ``sensor_origin`` (a lidar scan) as rays.

    ``T_fixed_cam`` places the window (default: a pose at the sensor). Returns None when fused,
    else the reason the scan was skipped.
    """
    points = np.asarray(points, np.float64)
    origin = np.asarray(sensor_origin, np.float64)
    if T_fixed_cam is None:
        T_fixed_cam = np.eye(4)
        T_fixed_cam[:3, 3] = origin
    if not np.isfinite(origin).all() and pose_problem(T_fixed_cam) is None:  # a bad pose is fuse_samples' to count
        return wmap.skip("non-finite pose")
    rays = ray_samples(origin, points[np.isfinite(points).all(1)], wmap.resolution, wmap.cfg.max_range)
    return wmap.fuse_samples(T_fixed_cam, rays, stamp_ns, check_tilt=False)
