"""KITTI-360: perspective cameras, calibration, poses and velodyne of one sequence as a Recording.

Layout below the dataset root (explicit paths override each part)::

    calibration/perspective.txt        P_rect_00/01, R_rect_00/01, S_rect_00/01
    calibration/calib_cam_to_pose.txt  image_0k: unrectified camera k -> GPS/IMU pose frame (3x4)
    calibration/calib_cam_to_velo.txt  unrectified camera 0 -> velodyne (3x4, no key)
    calibration/image_02.yaml, image_03.yaml   fisheye MEI models (parsed; no pinhole images)
    data_2d_raw/<seq>/image_0k/data_rect/<frame:010d>.png, image_00/timestamps.txt
    data_poses/<seq>/poses.txt         "<frame> 3x4" T_world_pose; frames without motion are absent
    data_poses/<seq>/cam0_to_world.txt "<frame> 4x4" rectified camera 0 -> world
    data_3d_raw/<seq>/velodyne_points/data/<frame:010d>.bin

base_link is the pose frame, so T_world_base is a line of poses.txt and a rectified camera sits
on it at ``calib_cam_to_pose @ inv(R_rect)`` (as kitti360Scripts). The world is the dataset's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..core import geometry
from .kitti_raw import calib_entry, read_calib, rigid, stereo_tx
from .records import (Camera, DatasetError, Recording, Rig, camera_frame_files, frame_records, frame_stamps,
                      read_matrix_rows, read_timestamps, rectified_camera, require_file, rows_to_poses)

PERSPECTIVE = ("image_00", "image_01")
CAMERA_FRAMES = {"image_00": "kitti360_cam_00", "image_01": "kitti360_cam_01"}
VELO_FRAME = "kitti360_velodyne"


@dataclass(frozen=True)
class MeiCamera:
    """A fisheye camera in the unified (MEI) model of KITTI-360's ``image_02.yaml`` / ``image_03.yaml``."""

    name: str
    width: int
    height: int
    xi: float
    k1: float
    k2: float
    p1: float
    p2: float
    gamma1: float
    gamma2: float
    u0: float
    v0: float

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) pixels of (N, 3) camera points: unit sphere, shift by xi, radial-tangential distortion."""
        p = points / np.linalg.norm(points, axis=1, keepdims=True)
        x, y = p[:, 0] / (p[:, 2] + self.xi), p[:, 1] / (p[:, 2] + self.xi)
        r2 = x * x + y * y
        radial = 1 + self.k1 * r2 + self.k2 * r2 * r2
        xd = x * radial + 2 * self.p1 * x * y + self.p2 * (r2 + 2 * x * x)
        yd = y * radial + self.p1 * (r2 + 2 * y * y) + 2 * self.p2 * x * y
        return np.stack([self.gamma1 * xd + self.u0, self.gamma2 * yd + self.v0], axis=1)


def read_mei_yaml(path: str | Path) -> MeiCamera:
    """MeiCamera of an OpenCV-style ``%YAML:1.0`` file (the directive is not YAML 1.1, so it is dropped)."""
    path = require_file(Path(path), "fisheye calibration")
    text = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("%YAML"))
    try:
        d = yaml.safe_load(text)
        dist, proj = d["distortion_parameters"], d["projection_parameters"]
        return MeiCamera(str(d["camera_name"]), int(d["image_width"]), int(d["image_height"]),
                         float(d["mirror_parameters"]["xi"]), float(dist["k1"]), float(dist["k2"]),
                         float(dist["p1"]), float(dist["p2"]), float(proj["gamma1"]), float(proj["gamma2"]),
                         float(proj["u0"]), float(proj["v0"]))
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"fisheye calibration {path} is malformed: {exc!r}") from exc


class Kitti360Calibration:
    """The calibration folder of KITTI-360."""

    def __init__(self, calib_dir: str | Path):
        d = Path(calib_dir)
        self.perspective_path, self.pose_path = d / "perspective.txt", d / "calib_cam_to_pose.txt"
        self.perspective = read_calib(self.perspective_path)
        self.cam_to_pose = read_calib(self.pose_path)
        velo = read_matrix_rows(d / "calib_cam_to_velo.txt", 12, "camera-to-velodyne calibration")
        self.T_velo_cam0 = rows_to_poses(velo[:1])[0]
        self.fisheye = {n: read_mei_yaml(d / f"{n}.yaml") for n in ("image_02", "image_03")
                        if (d / f"{n}.yaml").is_file()}

    def T_pose_cam(self, name: str) -> np.ndarray:
        """Unrectified camera ``image_0k`` -> pose frame."""
        return rows_to_poses(calib_entry(self.cam_to_pose, name, 12, self.pose_path)[None])[0]

    def camera(self, name: str) -> Camera:
        """Rectified perspective camera ``image_00`` or ``image_01`` on base_link (the pose frame)."""
        if name not in PERSPECTIVE:
            raise DatasetError(f"unknown KITTI-360 perspective camera {name!r}; expected one of {PERSPECTIVE}")
        k = name[-2:]
        K, T_cam_rect0 = rectified_camera(calib_entry(self.perspective, f"P_rect_{k}", 12,
                                                      self.perspective_path).reshape(3, 4))
        w, h = (int(v) for v in calib_entry(self.perspective, f"S_rect_{k}", 2, self.perspective_path))
        R_rect = rigid(calib_entry(self.perspective, f"R_rect_{k}", 9, self.perspective_path), np.zeros(3))
        tx = 0.0
        if name == "image_01":
            tx = stereo_tx(K, T_cam_rect0, rectified_camera(
                calib_entry(self.perspective, "P_rect_00", 12, self.perspective_path).reshape(3, 4))[1])
        return Camera(name, CAMERA_FRAMES[name], K, w, h, self.T_pose_cam(name) @ geometry.invert(R_rect),
                      projection_tx=tx)

    def rig(self, cameras: list[str]) -> Rig:
        """The chosen perspective cameras and the velodyne on base_link."""
        return Rig(tuple(self.camera(c) for c in cameras), self.T_pose_cam("image_00") @ geometry.invert(self.T_velo_cam0))


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


def load_kitti360_sequence(root: str | Path, sequence: str, cameras: list[str] | None = None,
                           calib_dir: str | Path | None = None, poses: str | Path | None = None) -> Recording:
    """A KITTI-360 sequence; frames are the images of the first camera, those absent from poses.txt unposed."""
    root = Path(root)
    cameras = cameras or [c for c in PERSPECTIVE if (root / "data_2d_raw" / sequence / c / "data_rect").is_dir()]
    if not cameras:
        raise DatasetError(f"no data_2d_raw/{sequence}/image_0k/data_rect folder in {root}")
    calib = Kitti360Calibration(calib_dir or root / "calibration")
    rig = calib.rig(cameras)
    files, indices = camera_frame_files({c: root / "data_2d_raw" / sequence / c / "data_rect" for c in cameras},
                                        "KITTI-360")
    ts = root / "data_2d_raw" / sequence / cameras[0] / "timestamps.txt"
    stamps, source = frame_stamps(indices, read_timestamps(ts) if ts.is_file() else None)
    pose_dir = root / "data_poses" / sequence
    if poses is not None or (pose_dir / "poses.txt").is_file():
        T_world_base = read_indexed_poses(poses or pose_dir / "poses.txt")
        poses_from = f"{Path(poses or pose_dir / 'poses.txt').name}; world: KITTI-360's"
    elif (pose_dir / "cam0_to_world.txt").is_file():
        T_base_rect0 = calib.camera("image_00").T_base_cam
        T_world_base = {i: T @ geometry.invert(T_base_rect0)
                        for i, T in read_indexed_poses(pose_dir / "cam0_to_world.txt", "cam0_to_world").items()}
        poses_from = "cam0_to_world.txt; world: KITTI-360's"
    else:
        T_world_base, poses_from = {}, "none"
    frames = frame_records(rig, indices, stamps, files, T_world_base,
                           root / "data_3d_raw" / sequence / "velodyne_points" / "data", 10)
    return Recording(sequence, rig, frames, poses_from, source)
