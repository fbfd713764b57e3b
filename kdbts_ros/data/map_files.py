"""The world map's files: occupied voxels as a PCD or PLY point cloud (open3d), the 2-D map as map_server's pair."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from kdbts_ros.core.map_2d import Grid2D


def save_points(path: str | Path, points: np.ndarray, probability: np.ndarray) -> int:
    """Write voxel centres (N, 3) to a .pcd or .ply file with open3d, grey by probability (darker = likelier).

    Returns the number of points written.
    """
    import open3d as o3d  # heavy: loaded only when a map is saved

    path = Path(path)
    if path.suffix.lower() not in (".pcd", ".ply"):
        raise ValueError(f"{path}: the map is saved as .pcd or .ply")
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    grey = np.repeat((1.0 - np.asarray(probability)[:, None]).astype(np.float64), 3, 1)
    cloud.colors = o3d.utility.Vector3dVector(grey)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not o3d.io.write_point_cloud(str(path), cloud, write_ascii=False):
        raise OSError(f"{path}: open3d could not write the map")
    return len(points)


def save_pgm_yaml(
    stem: str | Path, grid: Grid2D, occupied_thresh: float = 0.65, free_thresh: float = 0.25
) -> tuple[Path, Path]:
    """Write a 2-D map as nav2 map_server's pair ``stem.pgm`` + ``stem.yaml`` (trinary, as map_saver does).

    Pixels: 254 free (value <= free_thresh), 0 occupied (value >= occupied_thresh), 205
    unknown or in between; the image's top row is the map's highest y.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    v = grid.data.astype(np.int16)
    pixels = np.full(v.shape, 205, np.uint8)
    pixels[(v >= 0) & (v <= round(free_thresh * 100))] = 254
    pixels[v >= round(occupied_thresh * 100)] = 0
    pgm, meta = stem.with_suffix(".pgm"), stem.with_suffix(".yaml")
    if not cv2.imwrite(str(pgm), pixels[::-1]):
        raise OSError(f"{pgm}: could not write the image")
    meta.write_text(
        yaml.safe_dump(
            {
                "image": pgm.name,
                "mode": "trinary",
                "resolution": float(grid.resolution),
                "origin": [float(grid.origin[0]), float(grid.origin[1]), 0.0],
                "negate": 0,
                "occupied_thresh": float(occupied_thresh),
                "free_thresh": float(free_thresh),
            },
            sort_keys=False,
        )
    )
    return pgm, meta
