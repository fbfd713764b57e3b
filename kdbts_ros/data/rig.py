"""A KITTI-360-like multi-camera rig on base_link and the vehicle trajectory that carries it.

Frames: base_link is REP 103 (x forward, y left, z up); every camera frame is OPTICAL
(x right, y down, z forward). The world frame is the one of :mod:`.synthetic` (z up, x along
the street), so a camera's camera-to-world pose is ``T_world_base @ camera.T_base_cam()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# base_link (x forward, y left, z up) to an optical frame (x right, y down, z forward)
R_BASE_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


PERIOD_NS = 100_000_000  # camera frame period: 10 Hz, as KITTI and KITTI-360
START_NS = 1_700_000_000 * 1_000_000_000  # first stamp of generated sequences


def _rot_z(angle: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations by ``angle`` radians about z (positive: x turns towards y)."""
    c, s = np.cos(angle), np.sin(angle)
    rz = np.zeros(np.shape(angle) + (3, 3))
    rz[..., 0, 0], rz[..., 0, 1], rz[..., 1, 0], rz[..., 1, 1], rz[..., 2, 2] = c, -s, s, c, 1.0
    return rz


def kitti_like_intrinsics(width: int, height: int) -> np.ndarray:
    """3x3 K with the KITTI-360 normalised intrinsics fx'=0.7849, fy'=2.9391, cx'=-0.0312, cy'=0.2701 scaled to
    width/height: fx = fx'*W/2, cx = (cx'+1)*W/2, etc.
    """
    return np.array(
        [
            [0.7849 * width / 2, 0.0, (-0.0312 + 1.0) * width / 2],
            [0.0, 2.9391 * height / 2, (0.2701 + 1.0) * height / 2],
            [0.0, 0.0, 1.0],
        ]
    )


@dataclass(frozen=True)
class RigCamera:
    """One camera of the rig: yaw positive turns left (about base z), pitch negative looks down."""

    name: str
    yaw_deg: float
    pitch_deg: float
    position: tuple[float, float, float]  # in base_link, metres

    def T_base_cam(self) -> np.ndarray:
        """4x4 pose of the optical camera frame in base_link (maps camera points to base_link)."""
        p = np.radians(self.pitch_deg)
        # Rotating about base y (left) by +a tips x down, so looking down by |pitch| is a rotation by -pitch.
        ry = np.array([[np.cos(p), 0.0, -np.sin(p)], [0.0, 1.0, 0.0], [np.sin(p), 0.0, np.cos(p)]])
        T = np.eye(4)
        T[:3, :3] = _rot_z(np.radians(self.yaw_deg)) @ ry @ R_BASE_OPTICAL
        T[:3, 3] = self.position
        return T


KITTI360_RIG = (
    RigCamera("stereo_left", 0.0, 0.0, (0.0, 0.3, 1.55)),
    RigCamera("stereo_right", 0.0, 0.0, (0.0, -0.3, 1.55)),
    RigCamera("side_left", 90.0, -15.0, (0.0, 0.5, 1.55)),
    RigCamera("side_right", -90.0, -15.0, (0.0, -0.5, 1.55)),
)


@dataclass(frozen=True)
class RigConfig:
    """Image size and cameras; all share one pinhole K (as KITTI-360 resamples its fisheyes to a pinhole)."""

    width: int = 320
    height: int = 96
    cameras: tuple[RigCamera, ...] = KITTI360_RIG

    def K(self) -> np.ndarray:
        """3x3 pixel intrinsics shared by every camera."""
        return kitti_like_intrinsics(self.width, self.height)


def base_trajectory(
    n_frames: int,
    step_m: float = 1.0,
    lateral_offset_m: float = -1.5,
    start_x: float = 0.0,
    yaw_wobble_rad: float = 0.03,
    seed: int = 0,
) -> np.ndarray:
    """(n_frames, 4, 4) T_world_base poses of a vehicle driving along +x on the ground with a smooth heading wobble."""
    rng = np.random.default_rng(seed)
    phase, period = rng.uniform(0.0, 2 * np.pi), rng.uniform(15.0, 30.0)
    i = np.arange(n_frames, dtype=np.float64)
    yaw = yaw_wobble_rad * np.sin(2 * np.pi * i / period + phase)
    poses = np.tile(np.eye(4), (n_frames, 1, 1))
    poses[:, :3, :3] = _rot_z(yaw)
    poses[:, 0, 3] = start_x + i * step_m
    poses[:, 1, 3] = lateral_offset_m
    return poses
