"""Rigid transforms: quaternions, checks and interpolation (numpy, no ROS)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation, Slerp


def to_matrix(translation: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    """4x4 homogeneous transform from a translation and an (x, y, z, w) quaternion."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(quat_xyzw).as_matrix()
    T[:3, 3] = translation
    return T


def from_matrix(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translation and (x, y, z, w) quaternion of a 4x4 rigid transform."""
    return T[:3, 3].copy(), Rotation.from_matrix(T[:3, :3]).as_quat()


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform without a general matrix inverse."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def apply(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 3) mapped by the 4x4 transform ``T``."""
    return points @ T[:3, :3].T + T[:3, 3]


def rigid_problem(translation: np.ndarray, quat_xyzw: np.ndarray, tol: float = 1e-3) -> str | None:
    """Why a transform is unusable (NaN, infinite, non-unit quaternion), or None."""
    if not (np.all(np.isfinite(translation)) and np.all(np.isfinite(quat_xyzw))):
        return "non-finite transform"
    norm = float(np.linalg.norm(quat_xyzw))
    if abs(norm - 1.0) > tol:
        return f"quaternion norm {norm:.4f} is not 1"
    return None


def interpolate(T0: np.ndarray, T1: np.ndarray, alpha: float) -> np.ndarray:
    """Transform at fraction ``alpha`` between T0 and T1 (linear translation, slerp rotation)."""
    rots = Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]]))
    out = np.eye(4)
    out[:3, :3] = Slerp([0.0, 1.0], rots)([alpha]).as_matrix()[0]
    out[:3, 3] = (1.0 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]
    return out
