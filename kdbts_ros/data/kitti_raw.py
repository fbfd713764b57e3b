"""KITTI raw: calibration files, ORB-SLAM poses and synced+rectified colour frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def read_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Key -> float array of a KITTI ``calib_*.txt`` file (non-numeric entries are skipped)."""
    out: dict[str, np.ndarray] = {}
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(":")
        try:
            out[key.strip()] = np.array([float(v) for v in value.split()])
        except ValueError:
            continue  # calib_time holds a date
    return out


def left_colour_camera(calib_cam_to_cam: str | Path) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
    """Rectified intrinsics of camera 02, its image size (w, h) and T_cam0_cam2 (rectified frames).

    P_rect_02 = K [I | t] with t = (b, 0, 0) the shift from rectified cam 0 to cam 2.
    """
    c = read_calib(calib_cam_to_cam)
    P = c["P_rect_02"].reshape(3, 4)
    K = P[:, :3].copy()
    w, h = (int(v) for v in c["S_rect_02"])
    T_cam0_cam2 = np.eye(4)
    T_cam0_cam2[:3, 3] = -np.linalg.solve(K, P[:, 3])
    return K, (w, h), T_cam0_cam2


def read_orbslam_poses(path: str | Path) -> np.ndarray:
    """(N, 4, 4) cam0-to-world poses from the ORB-SLAM files used by BTS (row-major 3x4 per line)."""
    rows = np.loadtxt(path, dtype=np.float64).reshape(-1, 3, 4)
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :] = rows
    return poses
