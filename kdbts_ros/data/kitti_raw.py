"""KITTI raw: calibration files, OXTS or ORB-SLAM poses, synced+rectified frames as a :class:`Recording`.

Calibration (one folder per date): ``calib_cam_to_cam.txt`` (P_rect_0k, R_rect_00, S_rect_0k),
``calib_velo_to_cam.txt`` (velodyne -> unrectified camera 0), ``calib_imu_to_velo.txt``
(OXTS IMU -> velodyne). base_link is the IMU frame, so the OXTS pose T_world_imu is the
base_link pose itself (no second lever arm, unlike kitti2bag's base_link -> imu_link offset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdbts_ros.core import geometry
from kdbts_ros.data.records import (
    DatasetCamera,
    DatasetError,
    DatasetRig,
    Recording,
    base_poses_from_camera,
    camera_frame_files,
    frame_files,
    frame_records,
    frame_stamps,
    read_matrix_rows,
    read_timestamps,
    rectified_camera,
    require_file,
    rows_to_poses,
)
from kdbts_ros.messages.kitti2bag import IMU_HEIGHT

# dataset camera -> ROS frame (the kitti2bag names; topics are /kitti/<frame>/image_raw)
CAMERA_FRAMES = {
    "image_00": "camera_gray_left",
    "image_01": "camera_gray_right",
    "image_02": "camera_color_left",
    "image_03": "camera_color_right",
}
# second camera of each stereo pair -> the first (the baseline of CameraInfo's P is measured to it)
STEREO_PARTNER = {"image_01": "image_00", "image_03": "image_02"}
EARTH_RADIUS_M = 6378137.0  # the KITTI devkit's Mercator radius


def read_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Key -> float array of a KITTI ``calib*.txt`` file (non-numeric entries such as calib_time are skipped)."""
    path = require_file(Path(path), "calibration file")
    out: dict[str, np.ndarray] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        try:
            out[key.strip()] = np.array([float(v) for v in value.split()])
        except ValueError:
            continue  # calib_time holds a date
    return out


def calib_entry(calib: dict[str, np.ndarray], key: str, size: int, path: Path) -> np.ndarray:
    """``calib[key]`` checked to hold ``size`` numbers; DatasetError naming the file otherwise."""
    if key not in calib:
        raise DatasetError(f"{path} has no {key}")
    if calib[key].size != size:
        raise DatasetError(f"{path}: {key} has {calib[key].size} numbers, expected {size}")
    return calib[key]


def rigid(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 transform from a 3x3 rotation (or 9 numbers) and a translation."""
    T = np.eye(4)
    T[:3, :3] = np.reshape(R, (3, 3))
    T[:3, 3] = t
    return T


def stereo_tx(K: np.ndarray, T_cam_ref: np.ndarray, T_partner_ref: np.ndarray) -> float:
    """CameraInfo P[0, 3] = -fx * baseline of a stereo pair's second camera (baseline to its partner)."""
    return float(K[0, 0] * (T_cam_ref[0, 3] - T_partner_ref[0, 3]))


class RawCalibration:
    """The three calibration files of one KITTI raw date."""

    def __init__(self, calib_dir: str | Path):
        d = Path(calib_dir)
        self.cam_path = d / "calib_cam_to_cam.txt"
        self.cam = read_calib(self.cam_path)
        velo_path, imu_path = d / "calib_velo_to_cam.txt", d / "calib_imu_to_velo.txt"
        velo, imu = read_calib(velo_path), read_calib(imu_path)
        T_cam0_velo = rigid(calib_entry(velo, "R", 9, velo_path), calib_entry(velo, "T", 3, velo_path))
        self.T_velo_imu = rigid(calib_entry(imu, "R", 9, imu_path), calib_entry(imu, "T", 3, imu_path))
        R_rect = rigid(calib_entry(self.cam, "R_rect_00", 9, self.cam_path), np.zeros(3))
        # rectified camera 0 is the reference of every P_rect_0k
        self.T_rect0_velo = R_rect @ T_cam0_velo
        self.T_base_rect0 = geometry.invert(self.T_rect0_velo @ self.T_velo_imu)

    def projection(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """K and T_cam_rect0 of camera ``image_0k``."""
        return rectified_camera(calib_entry(self.cam, f"P_rect_{name[-2:]}", 12, self.cam_path).reshape(3, 4))

    def camera(self, name: str) -> DatasetCamera:
        """The rectified camera ``image_0k`` placed on base_link (the IMU)."""
        if name not in CAMERA_FRAMES:
            raise DatasetError(f"unknown KITTI raw camera {name!r}; expected one of {list(CAMERA_FRAMES)}")
        K, T_cam_rect0 = self.projection(name)
        w, h = (int(v) for v in calib_entry(self.cam, f"S_rect_{name[-2:]}", 2, self.cam_path))
        tx = stereo_tx(K, T_cam_rect0, self.projection(STEREO_PARTNER[name])[1]) if name in STEREO_PARTNER else 0.0
        return DatasetCamera(
            name,
            CAMERA_FRAMES[name],
            K,
            w,
            h,
            self.T_base_rect0 @ geometry.invert(T_cam_rect0),
            colour=name in ("image_02", "image_03"),
            projection_tx=tx,
        )

    def rig(self, cameras: list[str]) -> DatasetRig:
        """The chosen cameras and the velodyne on base_link."""
        return DatasetRig(tuple(self.camera(c) for c in cameras), geometry.invert(self.T_velo_imu), -IMU_HEIGHT)


def read_orbslam_poses(path: str | Path) -> np.ndarray:
    """(N, 4, 4) cam0-to-world poses from the ORB-SLAM files used by BTS (row-major 3x4 per line)."""
    return rows_to_poses(read_matrix_rows(Path(path), 12, "ORB-SLAM poses"))


def oxts_poses(packets: np.ndarray) -> np.ndarray:
    """(N, 4, 4) T_world_imu of OXTS packets (lat, lon, alt, roll, pitch, yaw first), the devkit's conversion.

    Mercator with the scale of the first latitude, R = Rz(yaw) Ry(pitch) Rx(roll), and the
    world origin moved to the first position (as pykitti does).
    """
    lat, lon, alt, roll, pitch, yaw = (packets[:, i] for i in range(6))
    scale = np.cos(np.radians(lat[0]))
    t = np.stack(
        [
            scale * EARTH_RADIUS_M * np.radians(lon),
            scale * EARTH_RADIUS_M * np.log(np.tan(np.radians(90.0 + lat) / 2.0)),
            alt,
        ],
        axis=1,
    )
    c, s = np.cos, np.sin
    Rx = np.stack(
        [np.ones_like(roll), 0 * roll, 0 * roll, 0 * roll, c(roll), -s(roll), 0 * roll, s(roll), c(roll)], 1
    ).reshape(-1, 3, 3)
    Ry = np.stack(
        [c(pitch), 0 * pitch, s(pitch), 0 * pitch, np.ones_like(pitch), 0 * pitch, -s(pitch), 0 * pitch, c(pitch)], 1
    ).reshape(-1, 3, 3)
    Rz = np.stack([c(yaw), -s(yaw), 0 * yaw, s(yaw), c(yaw), 0 * yaw, 0 * yaw, 0 * yaw, np.ones_like(yaw)], 1).reshape(
        -1, 3, 3
    )
    poses = np.tile(np.eye(4), (len(packets), 1, 1))
    poses[:, :3, :3] = Rz @ Ry @ Rx
    poses[:, :3, 3] = t - t[0]
    return poses


def read_oxts(folder: str | Path) -> dict[int, np.ndarray]:
    """Frame index -> T_world_imu from an ``oxts/data`` folder of packets (30 numbers per line)."""
    files = frame_files(Path(folder), ".txt", "OXTS packets")
    order = sorted(files)
    packets = np.stack([read_matrix_rows(files[i], 30, "OXTS packet")[0] for i in order])
    return dict(zip(order, oxts_poses(packets)))


def load_raw_drive(
    drive_dir: str | Path,
    calib_dir: str | Path | None = None,
    poses: str | Path | None = None,
    cameras: list[str] | None = None,
    name: str | None = None,
) -> Recording:
    """A synced+rectified KITTI raw drive as a Recording.

    ``drive_dir`` holds ``image_0k/data/*.png`` (and optionally ``velodyne_points/data``,
    ``oxts/data``, ``image_0k/timestamps.txt``); ``calib_dir`` defaults to its parent (the date
    folder). Poses: ``poses`` = an ORB-SLAM file (cam0 poses, world := base_link of frame 0),
    else the drive's OXTS packets (world: Mercator, origin at the first packet), else none.
    Without timestamps, frame i is stamped START_NS + i * 0.1 s.
    """
    drive = Path(drive_dir)
    if not drive.is_dir():
        raise DatasetError(f"KITTI raw drive folder not found: {drive}")
    cameras = cameras or [c for c in CAMERA_FRAMES if (drive / c / "data").is_dir()]
    if not cameras:
        raise DatasetError(f"no image_0k/data folder in {drive}")
    calib = RawCalibration(calib_dir if calib_dir is not None else drive.parent)
    rig = calib.rig(cameras)
    files, indices = camera_frame_files({c: drive / c / "data" for c in cameras}, "KITTI raw")
    ts = drive / cameras[0] / "timestamps.txt"
    stamps, source = frame_stamps(indices, read_timestamps(ts) if ts.is_file() else None)
    if poses is not None:
        cam0 = read_orbslam_poses(poses)
        if indices[-1] >= len(cam0):
            raise DatasetError(f"{poses} has {len(cam0)} poses but the drive has frame {indices[-1]}")
        T_world_base = dict(enumerate(base_poses_from_camera(cam0, calib.T_base_rect0)))
        poses_from = f"ORB-SLAM {Path(poses).name}; world: base_link of frame 0"
    elif (drive / "oxts" / "data").is_dir():
        T_world_base = read_oxts(drive / "oxts" / "data")
        poses_from = "OXTS; world: Mercator east-north-up, origin at the first packet"
    else:
        T_world_base, poses_from = {}, "none"
    frames = frame_records(rig, indices, stamps, files, T_world_base, drive / "velodyne_points" / "data", 10)
    return Recording(name or drive.name, rig, frames, poses_from, source)
