"""A :class:`Recording` as the messages of a bag (ROS 2, or ROS 1): images, camera_info, TF, velodyne, /clock.

Conventions (kitti2bag's names for KITTI raw and odometry; our own for KITTI-360):

* TF: ``world`` -> ``base_link`` on ``/tf`` at every posed frame (the vehicle pose, once);
  ``base_link`` -> each camera's rectified optical frame, -> the velodyne and -> ``base_footprint``
  (REP-120: base_link's projection on the road, the planner grid's frame in the KITTI presets) on
  ``/tf_static`` (one message, offered reliable + transient-local, so late subscribers such as RViz get it).
* Images are rectified (KITTI-360's fisheyes resampled to virtual pinhole views); ``camera_info``
  carries the rectified projection in ``p`` (K, and Tx = -fx * baseline for a stereo pair's second
  camera), ``k`` the same K, zero distortion, R = I.
* Stamps are the dataset's (or the documented 10 Hz fallback); ``/clock`` ticks at every frame
  (optional: ``ros2 bag play --clock`` publishes its own, and two clock sources can step time back).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdbts_ros.data.bags import CameraStream, bag_writer, camera_messages, static_tf
from kdbts_ros.data.records import DatasetCamera, DatasetError, Recording, read_velodyne
from kdbts_ros.messages import cdr, sensor_data


@dataclass(frozen=True)
class BagConventions:
    """Frame and topic names of a converted dataset; topics format {frame} and {index} (camera number)."""

    fixed_frame: str
    velo_frame: str
    velo_topic: str
    image_topic: str
    info_topic: str
    base_frame: str = "base_link"
    footprint_frame: str = "base_footprint"  # REP-120: base_link's projection on the road

    def stream(self, cam: DatasetCamera) -> CameraStream:
        """The camera's frame and topics on base_link."""
        names = {"frame": cam.frame_id, "index": cam.name[-2:].replace("_", "0")}
        return CameraStream(
            cam.frame_id,
            cam.T_base_cam,
            cam.K,
            self.image_topic.format(**names),
            self.info_topic.format(**names),
            cam.projection_tx,
        )


KITTI = BagConventions(
    "world", "velo_link", "/kitti/velo/pointcloud", "/kitti/{frame}/image_raw", "/kitti/{frame}/camera_info"
)
KITTI360 = BagConventions(
    "world",
    "kitti360_velodyne",
    "/kitti360/velodyne/points",
    "/kitti360/cam_{index}/image_rect",
    "/kitti360/cam_{index}/camera_info",
)

VELO_FIELDS = ("x", "y", "z", "intensity")


def velodyne_cloud(points: np.ndarray, stamp: int, frame_id: str, names: tuple[str, ...] = VELO_FIELDS) -> Any:
    """Unorganised sensor_msgs/PointCloud2 with float32 x, y, z, intensity (the KITTI scan as stored); ``names``
    of the four fields (kitti2bag calls the intensity ``i``)."""
    types = cdr.typestore().types
    data = np.ascontiguousarray(points, "<f4")
    fields = [
        types["sensor_msgs/msg/PointField"](name=n, offset=4 * i, datatype=7, count=1)  # 7: FLOAT32
        for i, n in enumerate(names)
    ]
    return types["sensor_msgs/msg/PointCloud2"](
        header=cdr.header(stamp, frame_id),
        height=1,
        width=len(data),
        fields=fields,
        is_bigendian=False,
        point_step=16,
        row_step=16 * len(data),
        data=data.view(np.uint8).reshape(-1),
        is_dense=bool(np.all(np.isfinite(data))),
    )


def clock_message(stamp: int) -> tuple[int, str, str, bytes]:
    """``/clock`` at ``stamp``."""
    msg = cdr.typestore().types["rosgraph_msgs/msg/Clock"](clock=cdr.header(stamp, "").stamp)
    return stamp, "/clock", "rosgraph_msgs/msg/Clock", cdr.serialize(msg)


def recording_messages(
    rec: Recording, conv: BagConventions, max_frames: int | None = None, velodyne: bool = True, clock: bool = True
) -> Iterator[tuple[int, str, str, bytes]]:
    """(stamp, topic, msgtype, bytes) of a recording in time order; images are read as they are needed."""
    frames = rec.frames[:max_frames] if max_frames else rec.frames
    if not frames:
        raise DatasetError(f"{rec.name} has no frames")
    streams = [conv.stream(c) for c in rec.rig.cameras]
    children = [(s.frame_id, s.T_base_cam) for s in streams]
    if velodyne and rec.rig.T_base_velo is not None:
        children.append((conv.velo_frame, rec.rig.T_base_velo))
    if rec.rig.ground_z is not None:
        T_base_footprint = np.eye(4)
        T_base_footprint[2, 3] = rec.rig.ground_z
        children.append((conv.footprint_frame, T_base_footprint))
    yield static_tf(children, frames[0].stamp_ns, conv.base_frame)
    for f in frames:
        if clock:
            yield clock_message(f.stamp_ns)
        if f.T_world_base is not None:  # frames the dataset has no pose for get no /tf
            yield (
                f.stamp_ns,
                "/tf",
                "tf2_msgs/msg/TFMessage",
                cdr.serialize(
                    sensor_data.tf_message([(conv.fixed_frame, conv.base_frame, f.stamp_ns, f.T_world_base)])
                ),
            )
        for cam, stream in enumerate(streams):
            yield from camera_messages(stream, f.stamp_ns, f.image(cam))
        if velodyne and f.velodyne is not None:
            yield (
                f.stamp_ns,
                conv.velo_topic,
                "sensor_msgs/msg/PointCloud2",
                cdr.serialize(velodyne_cloud(read_velodyne(f.velodyne), f.stamp_ns, conv.velo_frame)),
            )


def write_recording_bag(
    rec: Recording,
    out: str | Path,
    conv: BagConventions,
    storage: str = "mcap",
    max_frames: int | None = None,
    velodyne: bool = True,
    clock: bool = True,
    progress: bool | None = None,
) -> dict[str, int]:
    """Write the recording as a bag at ``out`` (must not exist; storage mcap, sqlite3 or rosbag1); returns messages
    per topic."""
    messages = recording_messages(rec, conv, max_frames, velodyne, clock)
    return write_messages(
        rec, out, storage, messages, conv.stream(rec.rig.cameras[0]).image_topic, max_frames, progress
    )


def write_messages(
    rec: Recording,
    out: str | Path,
    storage: str,
    messages: Iterator[tuple[int, str, str, bytes]],
    frame_topic: str,
    max_frames: int | None = None,
    progress: bool | None = None,
) -> dict[str, int]:
    """Write a recording's messages as a new bag, a progress bar counting ``frame_topic`` (one message per frame)."""
    from tqdm import tqdm

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; rosbags writes new bags only")
    n = min(len(rec.frames), max_frames or len(rec.frames))
    bar = tqdm(total=n, desc=rec.name, unit="frame", disable=None if progress is None else not progress)
    with bag_writer(out, storage) as bag:
        for stamp, topic, msgtype, data in messages:
            bag.write(topic, msgtype, stamp, data)
            if topic == frame_topic:
                bar.update()
    bar.close()
    return bag.counts
