"""KITTI-360: perspective and fisheye cameras, calibration, poses and velodyne of one sequence as a Recording.

Layout below the dataset root (explicit paths override each part)::

    calibration/perspective.txt        P_rect_00/01, R_rect_00/01, S_rect_00/01
    calibration/calib_cam_to_pose.txt  image_0k: unrectified camera k -> GPS/IMU pose frame (3x4)
    calibration/calib_cam_to_velo.txt  unrectified camera 0 -> velodyne (3x4, no key)
    calibration/image_02.yaml, image_03.yaml   fisheye MEI models of cameras 02/03
    data_2d_raw/<seq>/image_0k/data_rect/<frame:010d>.png (k = 0, 1), image_00/timestamps.txt
    data_2d_raw/<seq>/image_0k/data_rgb/<frame:010d>.png  (k = 2, 3: fisheye frames)
    data_poses/<seq>/poses.txt         "<frame> 3x4" T_world_pose; frames without motion are absent
    data_poses/<seq>/cam0_to_world.txt "<frame> 4x4" rectified camera 0 -> world
    data_3d_raw/<seq>/velodyne_points/data/<frame:010d>.bin

base_link is the pose frame turned to REP-103's axes (:data:`T_BASE_POSE`: the pose frame has x
forward, y right, z down, measured from calib_cam_to_pose; base_link has y left, z up), so a planner
grid or a map band in base_link is level and above the ground. T_world_base is a line of poses.txt
times that turn, and a rectified camera sits on base_link at ``T_BASE_POSE @ calib_cam_to_pose @
inv(R_rect)`` (kitti360Scripts' placement, turned). The world is the dataset's. The road lies 0.94 m
below base_link (a RANSAC plane of the sample's velodyne scans: 0.91 to 0.99 m over five frames; tested).

The fisheyes are served as the official loaders use them: virtual pinhole cameras with camera 00's
rectified K and size, rotated by ``fisheye_rotation`` (yaw, pitch; default (0, -15): 15 deg down, the
right camera's yaw mirrored) and placed at ``calib_cam_to_pose @ R``; each frame is resampled on
read (:mod:`.fisheye`); where the virtual view sees past the fisheye image its pixels are invalid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdbts_ros.core import geometry
from kdbts_ros.data.fisheye import OFFICIAL_ROTATION, MeiCamera, Rotated, read_mei_yaml, virtual_rotation
from kdbts_ros.data.kitti_raw import calib_entry, read_calib, rigid, stereo_tx
from kdbts_ros.data.records import (
    DatasetCamera,
    DatasetError,
    DatasetRig,
    Recording,
    camera_frame_files,
    frame_records,
    frame_stamps,
    read_matrix_rows,
    read_timestamps,
    rectified_camera,
    require_file,
    rows_to_poses,
)

PERSPECTIVE = ("image_00", "image_01")
FISHEYE = ("image_02", "image_03")  # left, right
CAMERA_FRAMES = {c: f"kitti360_cam_{c[-2:]}" for c in PERSPECTIVE + FISHEYE}
# base_link (x forward, y left, z up) from KITTI-360's GPS/IMU pose frame (x forward, y right, z down); its own inverse
T_BASE_POSE = np.diag([1.0, -1.0, -1.0, 1.0])
POSE_FRAME_HEIGHT = 0.94  # the pose frame above the road, metres: a plane fit to the sample's velodyne scans
IMAGE_FOLDERS = {**dict.fromkeys(PERSPECTIVE, "data_rect"), **dict.fromkeys(FISHEYE, "data_rgb")}


class Kitti360Calibration:
    """The calibration folder of KITTI-360."""

    def __init__(self, calib_dir: str | Path, fisheye_rotation: tuple[float, float] = OFFICIAL_ROTATION):
        d = Path(calib_dir)
        self.fisheye_rotation = fisheye_rotation
        self.perspective_path, self.pose_path = d / "perspective.txt", d / "calib_cam_to_pose.txt"
        self.perspective = read_calib(self.perspective_path)
        self.cam_to_pose = read_calib(self.pose_path)
        velo = read_matrix_rows(d / "calib_cam_to_velo.txt", 12, "camera-to-velodyne calibration")
        self.T_velo_cam0 = rows_to_poses(velo[:1])[0]
        self.fisheye: dict[str, MeiCamera] = {
            n: read_mei_yaml(d / f"{n}.yaml") for n in FISHEYE if (d / f"{n}.yaml").is_file()
        }
        self.calib_dir = d

    def T_base_unrect(self, name: str) -> np.ndarray:
        """Unrectified camera ``image_0k`` -> base_link (calib_cam_to_pose's row, turned by :data:`T_BASE_POSE`)."""
        return T_BASE_POSE @ rows_to_poses(calib_entry(self.cam_to_pose, name, 12, self.pose_path)[None])[0]

    def camera(self, name: str) -> DatasetCamera:
        """Rectified perspective camera ``image_00`` / ``01`` or virtual pinhole ``image_02`` / ``03`` on base_link."""
        if name in FISHEYE:
            return self.fisheye_camera(name)
        if name not in PERSPECTIVE:
            raise DatasetError(f"unknown KITTI-360 camera {name!r}; expected one of {PERSPECTIVE + FISHEYE}")
        k = name[-2:]
        K, T_cam_rect0 = rectified_camera(
            calib_entry(self.perspective, f"P_rect_{k}", 12, self.perspective_path).reshape(3, 4)
        )
        w, h = (int(v) for v in calib_entry(self.perspective, f"S_rect_{k}", 2, self.perspective_path))
        R_rect = rigid(calib_entry(self.perspective, f"R_rect_{k}", 9, self.perspective_path), np.zeros(3))
        tx = 0.0
        if name == "image_01":
            tx = stereo_tx(
                K,
                T_cam_rect0,
                rectified_camera(calib_entry(self.perspective, "P_rect_00", 12, self.perspective_path).reshape(3, 4))[
                    1
                ],
            )
        return DatasetCamera(
            name, CAMERA_FRAMES[name], K, w, h, self.T_base_unrect(name) @ geometry.invert(R_rect), projection_tx=tx
        )

    def fisheye_camera(self, name: str) -> DatasetCamera:
        """Fisheye ``image_02`` / ``image_03`` as the official virtual pinhole: camera 00's K and size, rotated."""
        if name not in self.fisheye:
            raise DatasetError(f"fisheye calibration not found: {self.calib_dir / (name + '.yaml')}")
        yaw, pitch = self.fisheye_rotation
        # the right camera looks the other way, so the official loader mirrors its yaw
        R = virtual_rotation(-yaw if name == "image_03" else yaw, pitch)
        ref = self.camera("image_00")
        return DatasetCamera(
            name,
            CAMERA_FRAMES[name],
            ref.K.copy(),
            ref.width,
            ref.height,
            self.T_base_unrect(name) @ rigid(R, np.zeros(3)),
            recorded=Rotated(self.fisheye[name], R),
        )

    def rig(self, cameras: list[str]) -> DatasetRig:
        """The chosen cameras and the velodyne on base_link."""
        return DatasetRig(
            tuple(self.camera(c) for c in cameras),
            self.T_base_unrect("image_00") @ geometry.invert(self.T_velo_cam0),
            -POSE_FRAME_HEIGHT,
        )


def read_indexed_poses(path: str | Path, what: str = "poses") -> dict[int, np.ndarray]:
    """Frame -> 4x4 pose of a KITTI-360 pose file (``<frame>`` then a 3x4 or 4x4 matrix per line)."""
    path = require_file(Path(path), what)
    with open(path) as f:
        width = len(f.readline().split())
    if width not in (13, 17):
        raise DatasetError(f"{what} {path}: expected a frame index and 12 or 16 numbers per line, got {width}")
    rows = read_matrix_rows(path, width, what)
    poses = rows_to_poses(rows[:, 1:13])
    return dict(zip(rows[:, 0].astype(int).tolist(), poses))


def image_folder(root: Path, sequence: str, camera: str) -> Path:
    """Where camera ``image_0k``'s frames of a sequence are (rectified perspective or raw fisheye)."""
    return root / "data_2d_raw" / sequence / camera / IMAGE_FOLDERS[camera]


def load_kitti360_sequence(
    root: str | Path,
    sequence: str,
    cameras: list[str] | None = None,
    calib_dir: str | Path | None = None,
    poses: str | Path | None = None,
    fisheye_rotation: tuple[float, float] = OFFICIAL_ROTATION,
) -> Recording:
    """A KITTI-360 sequence; frames are the images of the first camera, those absent from poses.txt unposed.

    Default cameras: every one whose image folder exists (perspective 00, 01, then fisheye 02, 03).
    """
    root = Path(root)
    cameras = cameras or [c for c in IMAGE_FOLDERS if image_folder(root, sequence, c).is_dir()]
    if not cameras:
        raise DatasetError(f"no data_2d_raw/{sequence}/image_0k/data_rect or data_rgb folder in {root}")
    calib = Kitti360Calibration(calib_dir or root / "calibration", fisheye_rotation)
    rig = calib.rig(cameras)
    files, indices = camera_frame_files({c: image_folder(root, sequence, c) for c in cameras}, "KITTI-360")
    ts = root / "data_2d_raw" / sequence / cameras[0] / "timestamps.txt"
    stamps, source = frame_stamps(indices, read_timestamps(ts) if ts.is_file() else None)
    pose_dir = root / "data_poses" / sequence
    if poses is not None or (pose_dir / "poses.txt").is_file():
        T_world_base = {i: T @ T_BASE_POSE for i, T in read_indexed_poses(poses or pose_dir / "poses.txt").items()}
        poses_from = f"{Path(poses or pose_dir / 'poses.txt').name}; world: KITTI-360's"
    elif (pose_dir / "cam0_to_world.txt").is_file():
        T_base_rect0 = calib.camera("image_00").T_base_cam
        T_world_base = {
            i: T @ geometry.invert(T_base_rect0)
            for i, T in read_indexed_poses(pose_dir / "cam0_to_world.txt", "cam0_to_world").items()
        }
        poses_from = "cam0_to_world.txt; world: KITTI-360's"
    else:
        T_world_base, poses_from = {}, "none"
    frames = frame_records(
        rig, indices, stamps, files, T_world_base, root / "data_3d_raw" / sequence / "velodyne_points" / "data", 10
    )
    return Recording(sequence, rig, frames, poses_from, source)
