"""Writing bags with rosbags: ROS 2 (mcap or sqlite3, with offered QoS that replays correctly) or ROS 1 (.bag).

Every writer takes the CDR bytes of ROS 2 messages; the ROS 1 writer converts them to ROS 1
(:meth:`Typestore.cdr_to_ros1`: std_msgs/Header gains ``seq`` 0) under ROS 1 Noetic's message
definitions and md5 sums, as ``rosbag record`` would have written them.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Connection, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from kdbts_ros.core.interrupts import deferred
from kdbts_ros.data.rig import PERIOD_NS, START_NS
from kdbts_ros.messages import cdr, sensor_data

_ZERO = QosTime(0, 0)
ROS1 = "rosbag1"  # the storage name of a ROS 1 bag
STORAGES = ("mcap", "sqlite3", ROS1)


@functools.cache
def ros1_typestore() -> Typestore:
    """ROS 1 Noetic's message definitions, with tf2_msgs/TFMessage (which rosbags' Noetic store lacks)."""
    store = get_typestore(Stores.ROS1_NOETIC)
    store.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage"))
    return store


def storage_for(out: str | Path, storage: str | None) -> str:
    """The storage asked for, else rosbag1 for a ``.bag`` file and mcap otherwise."""
    if storage:
        return storage
    return ROS1 if Path(out).suffix == ".bag" else "mcap"


def _qos(durability: QosDurability) -> Qos:
    return Qos(
        QosHistory.KEEP_LAST,
        1,
        QosReliability.RELIABLE,
        durability,
        _ZERO,
        _ZERO,
        QosLiveliness.AUTOMATIC,
        _ZERO,
        False,
    )


class BagWriter:
    """Adds connections on first use; ``/tf_static`` is offered transient-local so RViz gets it on replay.

    Whatever ends the writing (an error, Ctrl-C, SIGTERM turned into an exception by
    :mod:`kdbts_ros.core.interrupts`), the bag is closed with its index and metadata.yaml, so it
    reads back up to that point. A process killed outright loses at most the last
    ``DURABLE_EVERY_S`` seconds: completed mcap chunks are on disk, sqlite3 rows committed,
    and the reader salvages the rest (:mod:`kdbts_ros.messages.bag_salvage`).
    """

    DURABLE_EVERY_S = 1.0

    def __init__(self, path: str | Path, storage: str = "mcap"):
        plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
        self.path = Path(path)
        self.writer = Writer(self.path, version=8, storage_plugin=plugin)
        self.connections: dict[str, Connection] = {}
        self.counts: dict[str, int] = {}
        self._durable_at = 0.0

    def __enter__(self) -> BagWriter:
        with self._naming_the_bag():
            self.writer.open()
        self._durable_at = time.monotonic()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        with deferred():  # a second Ctrl-C must not cut the index in half
            try:
                with self._naming_the_bag():
                    self.writer.close()
            except Exception:
                with contextlib.suppress(Exception):
                    self.writer.abort()
                if exc is None:  # else the error that ended the writing is the one to report
                    raise

    def write(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        """Write one serialized message received or published at ``stamp_ns``."""
        with deferred(), self._naming_the_bag():  # a message is written whole or not at all
            if topic not in self.connections:
                durability = QosDurability.TRANSIENT_LOCAL if topic == "/tf_static" else QosDurability.VOLATILE
                self.connections[topic] = self.writer.add_connection(
                    topic, msgtype, typestore=cdr.typestore(), offered_qos_profiles=[_qos(durability)]
                )
            self.writer.write(self.connections[topic], stamp_ns, data)
            self.counts[topic] = self.counts.get(topic, 0) + 1
            if time.monotonic() - self._durable_at > self.DURABLE_EVERY_S:
                self._make_durable()

    def _make_durable(self) -> None:
        """Put what was written so far on disk: close the pending mcap chunk, commit the sqlite3 rows."""
        self._durable_at = time.monotonic()
        storage: Any = self.writer.storage  # which writer it is is asked below
        chunk = getattr(storage, "chunk", None)  # rosbags' McapWriter: the chunk not yet written
        if chunk is not None and hasattr(storage, "close_chunk"):
            if chunk.bio.tell():
                storage.close_chunk()
                storage.bio.flush()
        elif hasattr(storage, "conn"):  # rosbags' Sqlite3Writer, which would commit only at the end
            storage.conn.commit()

    @contextlib.contextmanager
    def _naming_the_bag(self) -> Iterator[None]:
        """OSErrors of the storage (a full disk) name the bag; sqlite3's 'disk is full' becomes ENOSPC."""
        try:
            yield
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(self.path)
            raise
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc):
                raise
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path)) from exc


class Ros1BagWriter:
    """A ROS 1 bag (``rosbag record``'s format) written from CDR bytes; ``/tf_static`` is latched.

    Closed with its index whatever ends the writing, as :class:`BagWriter`; uncompressed, as
    kitti2bag writes. A process killed outright leaves an unindexed bag (``rosbag reindex`` mends it).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.writer = Ros1Writer(self.path)
        self.connections: dict[str, Connection] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> Ros1BagWriter:
        self.writer.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        with deferred():  # a second Ctrl-C must not cut the index in half
            self.writer.close()

    def write(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        """Write one message given as the CDR bytes of its ROS 2 type."""
        with deferred():
            if topic not in self.connections:
                self.connections[topic] = self.writer.add_connection(
                    topic,
                    msgtype,
                    # a type Noetic lacks (the package's own) is defined as ROS 2 has it
                    typestore=ros1_typestore() if msgtype in ros1_typestore().types else cdr.typestore(),
                    latching=1 if topic == "/tf_static" else None,
                )
            self.writer.write(self.connections[topic], stamp_ns, bytes(cdr.typestore().cdr_to_ros1(data, msgtype)))
            self.counts[topic] = self.counts.get(topic, 0) + 1


def bag_writer(path: str | Path, storage: str = "mcap") -> BagWriter | Ros1BagWriter:
    """A writer of the storage asked for: mcap or sqlite3 (ROS 2), or rosbag1 (a ROS 1 .bag file)."""
    return Ros1BagWriter(path) if storage == ROS1 else BagWriter(path, storage)


@dataclass(frozen=True)
class CameraStream:
    """One camera as a driver publishes it: optical frame on base_link, intrinsics, topics."""

    frame_id: str
    T_base_cam: np.ndarray
    K: np.ndarray
    image_topic: str
    info_topic: str
    # P[0, 3] of a stereo pair's second camera: -fx * baseline (ROS CameraInfo); 0 for a single camera
    projection_tx: float = 0.0


def image_message(pixels: np.ndarray, stamp: int, frame_id: str, bgr: bool = False) -> Any:
    """sensor_msgs/Image: rgb8 (``bgr``: bgr8, as cv_bridge writes OpenCV images) of an (H, W, 3) RGB array, mono8
    of an (H, W) one."""
    if pixels.ndim == 3:
        msg = sensor_data.rgb_image(pixels[..., ::-1] if bgr else pixels, stamp, frame_id)
        msg.encoding = "bgr8" if bgr else "rgb8"
        return msg
    h, w = pixels.shape
    return cdr.typestore().types["sensor_msgs/msg/Image"](
        header=cdr.header(stamp, frame_id),
        height=h,
        width=w,
        encoding="mono8",
        is_bigendian=0,
        step=w,
        data=np.ascontiguousarray(pixels, np.uint8).reshape(-1),
    )


def camera_messages(cam: CameraStream, stamp: int, pixels: np.ndarray) -> Iterator[tuple[int, str, str, bytes]]:
    """camera_info (rectified: P from K and the stereo baseline, no distortion, R = I) and the image."""
    h, w = pixels.shape[:2]
    info = sensor_data.camera_info(cam.K, w, h, stamp, cam.frame_id)
    info.p[3] = cam.projection_tx
    yield stamp, cam.info_topic, "sensor_msgs/msg/CameraInfo", cdr.serialize(info)
    yield stamp, cam.image_topic, "sensor_msgs/msg/Image", cdr.serialize(image_message(pixels, stamp, cam.frame_id))


def static_tf(
    children: Sequence[tuple[str, np.ndarray]], stamp: int, parent: str = "base_link"
) -> tuple[int, str, str, bytes]:
    """One ``/tf_static`` message placing each (frame, T_parent_frame) on ``parent``."""
    msg = sensor_data.tf_message([(parent, child, stamp, T) for child, T in children])
    return stamp, "/tf_static", "tf2_msgs/msg/TFMessage", cdr.serialize(msg)


def rig_messages(
    cameras: Sequence[CameraStream],
    T_fixed_base: np.ndarray,
    images: Sequence[Sequence[np.ndarray]],
    fixed_frame: str = "odom",
    start_ns: int = START_NS,
    period_ns: int = PERIOD_NS,
) -> Iterator[tuple[int, str, str, bytes]]:
    """(stamp, topic, msgtype, bytes) of posed camera frames as drivers plus a localiser publish them.

    ``/tf_static`` (base_link -> each camera) first, then per frame ``/tf`` (fixed -> base_link)
    and every camera's camera_info and rgb8 image; images[i][c] is camera c at frame i.
    """
    yield static_tf([(c.frame_id, c.T_base_cam) for c in cameras], start_ns)
    for i, (T, frame) in enumerate(zip(T_fixed_base, images)):
        stamp = start_ns + i * period_ns
        yield (
            stamp,
            "/tf",
            "tf2_msgs/msg/TFMessage",
            cdr.serialize(sensor_data.tf_message([(fixed_frame, "base_link", stamp, T)])),
        )
        for cam, pixels in zip(cameras, frame):
            yield from camera_messages(cam, stamp, pixels)
