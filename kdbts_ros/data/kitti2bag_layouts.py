"""A KITTI recording as the ``kitti2bag`` tool writes it: ``raw_synced``, ``odom_gray``, ``odom_color``.

The topics, frames, TF tree and camera_info contents are kitti2bag's
(:mod:`kdbts_ros.messages.kitti2bag` describes them), so a bag written here replays as the
bags people have. What differs, and why:

* stamps are the recording's (raw: the drive's timestamps of the first camera, for every camera;
  odometry: ``START_NS`` + ``times.txt``, where kitti2bag adds the wall clock of the conversion);
* raw_synced: ``world`` -> ``base_link`` is the recording's pose of the IMU (OXTS, or ORB-SLAM poses
  re-expressed on the IMU where the drive has no OXTS packets, as the shared sample); no OXTS topics
  (``/kitti/oxts/...``) are written, the replay reads none;
* odom_color from a sequence without colour frames (the shared sample has only ``image_0``/``image_1``):
  with ``colour_from_grey`` the grey frames are written as 3-channel bgr8 under the colour cameras'
  names and projections (P2 and P0 share K; the pose is camera 0's either way).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kdbts_ros.core import geometry
from kdbts_ros.data.bags import image_message
from kdbts_ros.data.kitti_bag import velodyne_cloud, write_messages
from kdbts_ros.data.kitti_odometry import T_BASE_RECT0
from kdbts_ros.data.kitti_raw import CAMERA_FRAMES, RawCalibration, calib_entry, read_calib
from kdbts_ros.data.records import DatasetError, FrameRecord, Recording, read_velodyne
from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.messages import kitti2bag as k2b

BagMessage = tuple[int, str, str, bytes]
TF = "tf2_msgs/msg/TFMessage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"


def _tf(topic: str, stamp: int, transforms: list[tuple[str, str, np.ndarray]]) -> BagMessage:
    msg = sensor_data.tf_message([(parent, child, stamp, T) for parent, child, T in transforms])
    return stamp, topic, TF, cdr.serialize(msg)


def _info(frame: str, stamp: int, width: int, height: int, **fields: Any) -> Any:
    """A CameraInfo as kitti2bag fills it: what it sets, ROS's defaults for the rest (zeros, empty D)."""
    types = cdr.typestore().types
    values: dict[str, Any] = {
        "distortion_model": "",
        "d": np.zeros(0),
        "k": np.zeros(9),
        "r": np.zeros(9),
        "p": np.zeros(12),
        "binning_x": 0,
        "binning_y": 0,
        "roi": types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    }
    values.update(fields)
    return types[CAMERA_INFO](header=cdr.header(stamp, frame), height=height, width=width, **values)


def _camera(topic: str, info_topic: str, frame: str, stamp: int, pixels: np.ndarray, **info: Any) -> list[BagMessage]:
    """The image (mono8 grey, bgr8 colour) and then its camera_info, in kitti2bag's order."""
    h, w = pixels.shape[:2]
    image = image_message(pixels, stamp, frame, bgr=pixels.ndim == 3)
    return [
        (stamp, topic, cdr.IMAGE, cdr.serialize(image)),
        (stamp, info_topic, CAMERA_INFO, cdr.serialize(_info(frame, stamp, w, h, **info))),
    ]


def _frames(rec: Recording, max_frames: int | None) -> list[FrameRecord]:
    frames = rec.frames[:max_frames] if max_frames else rec.frames
    if not frames:
        raise DatasetError(f"{rec.name} has no frames")
    return frames


def _pykitti_T_imu_cam(calib: RawCalibration, camera: str) -> np.ndarray:
    """imu_link -> rectified camera as kitti2bag has it from pykitti: inv([I | t] R_rect_00 T_cam0_velo T_velo_imu).

    pykitti takes the camera's offset from rectified camera 0 as t = (P[0, 3] / fx, 0, 0) only
    (the project's rig solves K t = P[:, 3], a few millimetres apart for the colour cameras).
    """
    P = calib_entry(calib.cam, f"P_rect_{camera[-2:]}", 12, calib.cam_path).reshape(3, 4)
    shift = np.eye(4)
    shift[0, 3] = P[0, 3] / P[0, 0]
    return calib.T_base_rect0 @ geometry.invert(shift)


def raw_synced_messages(rec: Recording, calib: RawCalibration, max_frames: int | None = None) -> Iterator[BagMessage]:
    """A KITTI raw drive (loaded with base_link = the IMU) as kitti2bag's raw_synced bag, in time order."""
    lever = np.eye(4)
    lever[:3, 3] = k2b.IMU_LEVER_ARM
    static = [(k2b.BASE_FRAME, k2b.IMU_FRAME, lever)]
    if rec.rig.T_base_velo is not None:
        static.append((k2b.IMU_FRAME, k2b.VELO_FRAME, rec.rig.T_base_velo))
    cam_file = calib.cam_path
    # every camera of the calibration is in kitti2bag's TF tree, whichever the drive has images of
    static += [(k2b.IMU_FRAME, CAMERA_FRAMES[c], _pykitti_T_imu_cam(calib, c)) for c in CAMERA_FRAMES]
    for f in _frames(rec, max_frames):
        stamp = f.stamp_ns
        yield _tf("/tf_static", stamp, static)  # kitti2bag repeats it at every frame
        if f.T_world_base is not None:
            yield _tf("/tf", stamp, [(k2b.FIXED_FRAME, k2b.BASE_FRAME, f.T_world_base)])
        for i, cam in enumerate(rec.rig.cameras):
            n = cam.name[-2:]
            yield from _camera(
                k2b.image_topic(cam.frame_id, "raw_synced"),
                k2b.info_topic(cam.frame_id),
                cam.frame_id,
                stamp,
                f.image(i),
                distortion_model="plumb_bob",
                k=calib_entry(calib.cam, f"K_{n}", 9, cam_file),
                r=calib_entry(calib.cam, f"R_rect_{n}", 9, cam_file),
                d=calib_entry(calib.cam, f"D_{n}", 5, cam_file),
                p=calib_entry(calib.cam, f"P_rect_{n}", 12, cam_file),
            )
        if f.velodyne is not None:
            cloud = velodyne_cloud(read_velodyne(f.velodyne), stamp, k2b.VELO_FRAME, ("x", "y", "z", "i"))
            yield stamp, k2b.VELO_TOPIC, "sensor_msgs/msg/PointCloud2", cdr.serialize(cloud)


def odometry_messages(
    rec: Recording,
    layout: str,
    calib_path: Path,
    max_frames: int | None = None,
    colour_from_grey: bool = False,
) -> Iterator[BagMessage]:
    """A KITTI odometry sequence as kitti2bag's odom_gray or odom_color bag, in time order.

    The recording holds the layout's cameras (image_0 + image_1, or image_2 + image_3), or with
    ``colour_from_grey`` (odom_color only) the grey ones, written as colour (3 channels).
    """
    calib = read_calib(calib_path)
    pair = k2b.layout_cameras(layout)
    colour = layout == "odom_color"
    grey_source = colour and colour_from_grey
    wanted = [f"image_{k - 2 if grey_source else k}" for k in pair]
    names = [c.name for c in rec.rig.cameras]
    if not names or any(n not in wanted for n in names):
        hint = "; --colour-from-grey writes its grey frames as colour" if colour and not grey_source else ""
        raise DatasetError(
            f"{layout} writes cameras {' and '.join(wanted)}; {rec.name} has {', '.join(names) or 'none'}{hint}"
        )
    order = [wanted.index(n) for n in names]
    for f in _frames(rec, max_frames):
        stamp = f.stamp_ns
        if f.T_world_base is not None:  # poses/NN.txt itself: camera 0 in camera 0 of the first frame
            T = geometry.invert(T_BASE_RECT0) @ f.T_world_base @ T_BASE_RECT0
            yield _tf("/tf", stamp, [(k2b.FIXED_FRAME, k2b.ODOM_CAMERA_FRAME, T)])
        for i, side in enumerate(order):
            number = pair[side]
            frame = k2b.CAMERAS[number]
            pixels = f.image(i, colour=colour)
            yield from _camera(
                k2b.image_topic(frame, layout),
                k2b.info_topic(frame),
                frame,
                stamp,
                pixels,
                p=calib_entry(calib, f"P{number}", 12, calib_path),
            )


def write_kitti2bag(
    rec: Recording,
    layout: str,
    out: str | Path,
    calib: Path,
    storage: str = "rosbag1",
    max_frames: int | None = None,
    colour_from_grey: bool = False,
    progress: bool | None = None,
) -> dict[str, int]:
    """Write ``rec`` as kitti2bag's ``layout`` at ``out`` (new); ``calib``: the raw date folder or the odometry
    ``calib.txt``. Returns messages per topic."""
    if layout == "raw_synced":
        messages = raw_synced_messages(rec, RawCalibration(calib), max_frames)
        frame_topic = k2b.image_topic(rec.rig.cameras[0].frame_id, layout)
    elif layout in ("odom_gray", "odom_color"):
        messages = odometry_messages(rec, layout, calib, max_frames, colour_from_grey)
        first_camera = int(rec.rig.cameras[0].name[-1]) + (2 if colour_from_grey and layout == "odom_color" else 0)
        frame_topic = k2b.image_topic(k2b.CAMERAS[first_camera], layout)
    else:
        raise DatasetError(f"unknown kitti2bag layout {layout!r}; expected one of {', '.join(k2b.LAYOUTS)}")
    first = next(messages)  # a recording the layout cannot hold is refused before the bag is created
    return write_messages(rec, out, storage, itertools.chain([first], messages), frame_topic, max_frames, progress)
