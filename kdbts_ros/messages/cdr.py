"""CDR bytes of ROS 2 messages with rosbags' Jazzy typestore (no ROS installation needed), and shared fields.

The live node publishes these bytes with rclpy and the tools write them to bags, so both
share one encoding path; ``kdbts_ros/msg/DensityGrid`` is registered from ``msg/``.
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from kdbts_ros.core import geometry

DENSITY_GRID = "kdbts_ros/msg/DensityGrid"


IMAGE = "sensor_msgs/msg/Image"


COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"


_PACKAGE = Path(__file__).resolve().parents[1]  # kdbts_ros/


def _msg_dirs() -> list[Path]:
    """msg/ beside the package (source tree), the copy setup.py puts inside it, or share/ of a colcon install."""
    dirs = [_PACKAGE.parent / "msg", _PACKAGE / "interfaces"]
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("kdbts_ros")) / "msg")
    except (ImportError, LookupError, OSError):  # no ROS, or not installed by colcon
        pass
    return dirs


class ConversionError(ValueError):
    """An input message that cannot be converted, with the reason."""


@functools.cache
def typestore() -> Typestore:
    """Jazzy typestore with the package's own messages registered."""
    ts = get_typestore(Stores.ROS2_JAZZY)
    dirs = _msg_dirs()
    for d in dirs:
        path = d / "DensityGrid.msg"
        if path.exists():
            ts.register(get_types_from_msg(path.read_text(), DENSITY_GRID))
            return ts
    raise FileNotFoundError(f"DensityGrid.msg not found in {[str(d) for d in dirs]}")


def serialize(msg: Any) -> bytes:
    """CDR bytes of a rosbags message object."""
    return bytes(typestore().serialize_cdr(msg, msg.__msgtype__))


def deserialize(data: bytes | memoryview, msgtype: str) -> Any:
    """rosbags message object from CDR bytes; raises ConversionError on corrupt data."""
    try:
        return typestore().deserialize_cdr(bytes(data), msgtype)
    except Exception as exc:  # rosbags raises several types on truncated or garbled bytes
        raise ConversionError(f"cannot decode {msgtype}: {exc}") from exc


def msg_type(name: str) -> type:
    """The rosbags class of a message type name."""
    return typestore().types[name]


def stamp_ns(stamp: Any) -> int:
    """Nanoseconds of a builtin_interfaces/Time."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_stamp_ns(data: bytes) -> int:
    """Stamp of a serialized message that starts with a std_msgs/Header, without deserializing the rest.

    CDR: a 4-byte encapsulation header (byte 1 is 1 for little endian), then int32 sec, uint32 nanosec.
    """
    sec, nanosec = struct.unpack_from("<iI" if data[1] else ">iI", data, 4)
    return sec * 1_000_000_000 + nanosec


def header(stamp: int, frame_id: str) -> Any:
    """std_msgs/Header at ``stamp`` nanoseconds."""
    sec, nsec = divmod(int(stamp), 1_000_000_000)
    return msg_type("std_msgs/msg/Header")(
        stamp=msg_type("builtin_interfaces/msg/Time")(sec=sec, nanosec=nsec), frame_id=frame_id
    )


def pose(T: np.ndarray) -> Any:
    """geometry_msgs/Pose of a 4x4 transform."""
    t, q = geometry.from_matrix(T)
    return msg_type("geometry_msgs/msg/Pose")(
        position=msg_type("geometry_msgs/msg/Point")(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=msg_type("geometry_msgs/msg/Quaternion")(
            x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])
        ),
    )
