"""KITTI odometry: a sequence folder (``calib.txt``, ``times.txt``, ``image_0..3``, ``velodyne``) as a Recording.

``calib.txt`` holds P0..P3 (rectified projections relative to rectified camera 0) and Tr
(velodyne -> rectified camera 0); ``poses/NN.txt`` holds camera-0 poses in the frame of camera 0
at frame 0. base_link is a REP 103 frame (x forward, y left, z up) at camera 0 and the world
is base_link of frame 0, so the world is z-up; stamps are START_NS + ``times.txt`` seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdbts_ros.core import geometry
from kdbts_ros.data.kitti_raw import CAMERA_FRAMES, STEREO_PARTNER, calib_entry, read_calib, stereo_tx
from kdbts_ros.data.records import (
    DatasetCamera,
    DatasetError,
    DatasetRig,
    Recording,
    base_poses_from_camera,
    camera_frame_files,
    frame_records,
    png_size,
    read_matrix_rows,
    rectified_camera,
    rows_to_poses,
)
from kdbts_ros.data.rig import PERIOD_NS, R_BASE_OPTICAL, START_NS
from kdbts_ros.messages.kitti2bag import CAMERA_HEIGHT

# odometry folder -> the raw dataset's camera name (image_2 is image_02, the left colour camera)
ODOMETRY_CAMERAS = {f"image_{k}": f"image_0{k}" for k in range(4)}
T_BASE_RECT0 = np.eye(4)  # base_link (REP 103) at rectified camera 0
T_BASE_RECT0[:3, :3] = R_BASE_OPTICAL


def odometry_rig(calib_path: Path, cameras: list[str], sizes: dict[str, tuple[int, int]]) -> DatasetRig:
    """Cameras ``image_k`` and the velodyne on base_link (REP 103 at rectified camera 0)."""
    calib = read_calib(calib_path)
    proj = {
        c: rectified_camera(calib_entry(calib, f"P{c[-1]}", 12, calib_path).reshape(3, 4)) for c in ODOMETRY_CAMERAS
    }
    out = []
    for c in cameras:
        K, T_cam_rect0 = proj[c]
        raw = ODOMETRY_CAMERAS[c]
        partner = next((o for o, r in ODOMETRY_CAMERAS.items() if r == STEREO_PARTNER.get(raw)), None)
        tx = stereo_tx(K, T_cam_rect0, proj[partner][1]) if partner else 0.0
        out.append(
            DatasetCamera(
                c,
                CAMERA_FRAMES[raw],
                K,
                *sizes[c],
                T_BASE_RECT0 @ geometry.invert(T_cam_rect0),
                colour=c in ("image_2", "image_3"),
                projection_tx=tx,
            )
        )
    T_base_velo = None
    if "Tr" in calib:
        Tr = np.eye(4)
        Tr[:3, :] = calib_entry(calib, "Tr", 12, calib_path).reshape(3, 4)
        T_base_velo = T_BASE_RECT0 @ Tr
    return DatasetRig(tuple(out), T_base_velo, -CAMERA_HEIGHT)


def load_odometry_sequence(
    seq_dir: str | Path,
    poses: str | Path | None = None,
    cameras: list[str] | None = None,
    calib: str | Path | None = None,
) -> Recording:
    """A KITTI odometry sequence; ``poses`` defaults to ``<seq_dir>/../../poses/<seq>.txt`` when it exists."""
    seq = Path(seq_dir)
    if not seq.is_dir():
        raise DatasetError(f"KITTI odometry sequence folder not found: {seq}")
    cameras = cameras or [c for c in ODOMETRY_CAMERAS if (seq / c).is_dir()]
    if not cameras:
        raise DatasetError(f"no image_0..image_3 folder in {seq}")
    unknown = [c for c in cameras if c not in ODOMETRY_CAMERAS]
    if unknown:
        raise DatasetError(f"unknown KITTI odometry camera(s) {unknown}; expected {list(ODOMETRY_CAMERAS)}")
    files, indices = camera_frame_files({c: seq / c for c in cameras}, "KITTI odometry")
    sizes = {c: png_size(f[indices[0]]) for c, f in zip(cameras, files)}
    rig = odometry_rig(Path(calib) if calib else seq / "calib.txt", cameras, sizes)

    times = seq / "times.txt"
    if times.is_file():
        seconds = read_matrix_rows(times, 1, "odometry times")[:, 0]
        if indices[-1] >= len(seconds):
            raise DatasetError(f"{times} has {len(seconds)} lines but the sequence has frame {indices[-1]}")
        stamps, source = [START_NS + int(round(seconds[i] * 1e9)) for i in indices], "dataset"  # noqa: RUF046 - NumPy 1.x round() keeps float64
    else:
        stamps, source = [START_NS + i * PERIOD_NS for i in indices], "10 Hz fallback"

    pose_file = Path(poses) if poses else seq.parent.parent / "poses" / f"{seq.name}.txt"
    T_world_base: dict[int, np.ndarray] = {}
    poses_from = "none"
    if poses or pose_file.is_file():
        cam0 = rows_to_poses(read_matrix_rows(pose_file, 12, "odometry poses"))
        if indices[-1] >= len(cam0):
            raise DatasetError(f"{pose_file} has {len(cam0)} poses but the sequence has frame {indices[-1]}")
        T_world_base = dict(enumerate(base_poses_from_camera(cam0, T_BASE_RECT0)))
        poses_from = f"{pose_file.name}; world: base_link of frame 0"
    frames = frame_records(rig, indices, stamps, files, T_world_base, seq / "velodyne", 6)
    return Recording(seq.name, rig, frames, poses_from, source)
