"""ROS 2 messages as CDR bytes, built and parsed with rosbags (no ROS installation needed).

The live node publishes these bytes with rclpy and the replay tool writes them
to bags, so both share one encoding path. rosbags' Jazzy typestore has the
standard messages; ``kdbts_ros/msg/DensityGrid`` is registered from ``msg/``.
"""
from __future__ import annotations

import functools
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from kdbts_ros.core import geometry
from kdbts_ros.core.config import TopicsConfig
from kdbts_ros.core.grids import GridSpec

if TYPE_CHECKING:  # the launch file reads bags through this module: no torch for that
    from kdbts_ros.core.pipeline import Outputs

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


def serialize(msg: object) -> bytes:
    """CDR bytes of a rosbags message object."""
    return bytes(typestore().serialize_cdr(msg, msg.__msgtype__))


def deserialize(data: bytes | memoryview, msgtype: str) -> object:
    """rosbags message object from CDR bytes; raises ConversionError on corrupt data."""
    try:
        return typestore().deserialize_cdr(bytes(data), msgtype)
    except Exception as exc:  # rosbags raises several types on truncated or garbled bytes
        raise ConversionError(f"cannot decode {msgtype}: {exc}") from exc


def _t(name: str):
    return typestore().types[name]


def stamp_ns(stamp: object) -> int:
    """Nanoseconds of a builtin_interfaces/Time."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_stamp_ns(data: bytes) -> int:
    """Stamp of a serialized message that starts with a std_msgs/Header, without deserializing the rest.

    CDR: a 4-byte encapsulation header (byte 1 is 1 for little endian), then int32 sec, uint32 nanosec.
    """
    sec, nanosec = struct.unpack_from("<iI" if data[1] else ">iI", data, 4)
    return sec * 1_000_000_000 + nanosec


def header(stamp: int, frame_id: str) -> object:
    """std_msgs/Header at ``stamp`` nanoseconds."""
    sec, nsec = divmod(int(stamp), 1_000_000_000)
    return _t("std_msgs/msg/Header")(stamp=_t("builtin_interfaces/msg/Time")(sec=sec, nanosec=nsec),
                                     frame_id=frame_id)


def pose(T: np.ndarray) -> object:
    """geometry_msgs/Pose of a 4x4 transform."""
    t, q = geometry.from_matrix(T)
    return _t("geometry_msgs/msg/Pose")(
        position=_t("geometry_msgs/msg/Point")(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=_t("geometry_msgs/msg/Quaternion")(x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                        w=float(q[3])))


# ---------------------------------------------------------------- inputs

_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def image_to_rgb(msg: object) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a sensor_msgs/Image in rgb8, bgr8, rgba8, bgra8 or mono8."""
    enc = msg.encoding.lower()
    if enc not in _CHANNELS:
        raise ConversionError(f"unsupported image encoding {msg.encoding!r}; "
                              f"expected one of {', '.join(_CHANNELS)}")
    c, h, w = _CHANNELS[enc], int(msg.height), int(msg.width)
    if h == 0 or w == 0:
        raise ConversionError(f"empty image {w}x{h}")
    if msg.step < w * c or len(msg.data) < msg.step * h:
        raise ConversionError(f"image data ({len(msg.data)} bytes, step {msg.step}) too small "
                              f"for {w}x{h} {enc}")
    rows = np.frombuffer(msg.data, np.uint8, count=msg.step * h).reshape(h, msg.step)
    px = rows[:, : w * c].reshape(h, w, c)
    if enc == "mono8":
        return np.repeat(px, 3, axis=2)
    rgb = px[..., :3]
    return np.ascontiguousarray(rgb[..., ::-1] if enc.startswith("bgr") else rgb)


def rgb_image(rgb: np.ndarray, stamp: int, frame_id: str) -> object:
    """sensor_msgs/Image rgb8 from an (H, W, 3) uint8 array."""
    h, w = rgb.shape[:2]
    return _t(IMAGE)(header=header(stamp, frame_id), height=h, width=w, encoding="rgb8",
                     is_bigendian=0, step=3 * w, data=np.ascontiguousarray(rgb, np.uint8).reshape(-1))


def image_msgtype(topic: str) -> str:
    """Message type of an image topic: image_transport publishes the compressed form on ``<base>/compressed``."""
    return COMPRESSED_IMAGE if topic.rsplit("/", 1)[-1] == "compressed" else IMAGE


# codec -> (first bytes, last bytes) of a complete file
_CODECS = {"jpeg": (b"\xff\xd8\xff", b"\xff\xd9"), "png": (b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82")}
# "jpg" is what cv_bridge's cv2_to_compressed_imgmsg writes by default
_CODEC_NAMES = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}
# OpenCV decodes jpeg and png to grey, BGR or BGRA, whatever encodings the format string names
_DECODED_TO_RGB = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}


def _codec(fmt: str) -> str:
    """jpeg or png from a CompressedImage format: "jpeg", or image_transport's "rgb8; jpeg compressed bgr8"."""
    # before ';' is the camera's raw encoding, which the publisher converted before compressing
    words = fmt.lower().split(";", 1)[-1].split()
    codec = _CODEC_NAMES.get(words[0] if words else "")
    if codec is None:
        raise ConversionError(f"unsupported compressed image format {fmt!r}; expected jpeg or png "
                              "(image_transport's compressed transport, not compressedDepth)")
    return codec


def compressed_to_rgb(msg: object) -> np.ndarray:
    """RGB uint8 (H, W, 3) from an 8-bit jpeg or png sensor_msgs/CompressedImage (grey, colour or with alpha)."""
    codec = _codec(msg.format)
    data = bytes(msg.data)
    if not data:
        raise ConversionError(f"empty {codec} image")
    start, end = _CODECS[codec]
    # libjpeg decodes a jpeg that lacks its end with only a warning (OpenCV 4 greys out the missing rows), so
    # completeness is checked here; zeros after the end marker are tolerated (fixed-size encoder buffers)
    if not data.startswith(start) or not data.rstrip(b"\0").endswith(end):
        raise ConversionError(f"{len(data)} bytes are not a complete {codec} file (format {msg.format!r})")
    try:
        # UNCHANGED: no EXIF rotation (the intrinsics describe the pixels as sent) and 16-bit stays 16-bit
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. a header that claims more pixels than OpenCV allows
        raise ConversionError(f"cannot decode {codec} image: {exc}") from exc
    if img is None:
        raise ConversionError(f"cannot decode {codec} image ({len(data)} bytes, format {msg.format!r})")
    if img.dtype != np.uint8:
        # how 16 bits map to 8 depends on the sensor (12-bit data, thermal, depth); raw 16-bit is rejected too
        raise ConversionError(f"{img.dtype} {codec} image; only 8-bit images are supported")
    return cv2.cvtColor(img, _DECODED_TO_RGB[1 if img.ndim == 2 else img.shape[2]])


def compressed_image(rgb: np.ndarray, stamp: int, frame_id: str, fmt: str = "jpeg", quality: int = 90) -> object:
    """sensor_msgs/CompressedImage of an (H, W, 3) uint8 array as image_transport writes it (quality: jpeg only)."""
    if fmt not in _CODECS:
        raise ValueError(f"unsupported format {fmt!r}; expected one of {', '.join(_CODECS)}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(f".{fmt}", np.ascontiguousarray(rgb[..., ::-1], np.uint8), params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {rgb.shape} {rgb.dtype} array as {fmt}")
    return _t(COMPRESSED_IMAGE)(header=header(stamp, frame_id), format=f"rgb8; {fmt} compressed bgr8",
                                data=buf.reshape(-1))


def _is_compressed(msgtype: str) -> bool:
    """Whether an image message type is the compressed one; other message types raise ConversionError."""
    if msgtype not in (IMAGE, COMPRESSED_IMAGE):
        raise ConversionError(f"{msgtype} is not an image type; expected {IMAGE} or {COMPRESSED_IMAGE}")
    return msgtype == COMPRESSED_IMAGE


def image_format(msg: object, msgtype: str) -> str:
    """Encoding of a raw image or format of a compressed one, to notice a camera that changes format."""
    return msg.format if _is_compressed(msgtype) else msg.encoding


def decode_image(msg: object, msgtype: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a sensor_msgs/Image or sensor_msgs/CompressedImage."""
    return compressed_to_rgb(msg) if _is_compressed(msgtype) else image_to_rgb(msg)


def camera_info_intrinsics(msg: object) -> tuple[np.ndarray, int, int, str]:
    """Pixel intrinsics, width, height and source ('p' or 'k') of a sensor_msgs/CameraInfo.

    Rectified images are described by the projection matrix P, so P's left 3x3
    is used when it is set; K only when P is all zero (KITTI bags put the
    unrectified K in ``k``, a 33 % focal error if used).
    """
    P = np.asarray(msg.p, np.float64).reshape(3, 4)
    K = np.asarray(msg.k, np.float64).reshape(3, 3)
    src, M = ("p", P[:, :3]) if P[0, 0] > 0 and P[1, 1] > 0 else ("k", K)
    if not (np.all(np.isfinite(M)) and M[0, 0] > 0 and M[1, 1] > 0):
        raise ConversionError("camera_info has no usable intrinsics (P and K are zero or invalid)")
    if msg.width == 0 or msg.height == 0:
        raise ConversionError("camera_info has zero width or height")
    return M.copy(), int(msg.width), int(msg.height), src


def tf_transforms(msg: object) -> list[tuple[str, str, int, np.ndarray | None, str | None]]:
    """(parent, child, stamp_ns, T_parent_child or None, problem) of each transform in a TFMessage."""
    out = []
    for ts in msg.transforms:
        tr, rot = ts.transform.translation, ts.transform.rotation
        t = np.array([tr.x, tr.y, tr.z])
        q = np.array([rot.x, rot.y, rot.z, rot.w])
        problem = geometry.rigid_problem(t, q)
        T = None if problem else geometry.to_matrix(t, q / np.linalg.norm(q))
        out.append((ts.header.frame_id.lstrip("/"), ts.child_frame_id.lstrip("/"),
                    stamp_ns(ts.header.stamp), T, problem))
    return out


def tf_message(transforms: list[tuple[str, str, int, np.ndarray]]) -> object:
    """tf2_msgs/TFMessage from (parent, child, stamp_ns, T_parent_child) tuples."""
    items = []
    for parent, child, stamp, T in transforms:
        p = pose(T)
        items.append(_t("geometry_msgs/msg/TransformStamped")(
            header=header(stamp, parent), child_frame_id=child,
            transform=_t("geometry_msgs/msg/Transform")(
                translation=_t("geometry_msgs/msg/Vector3")(x=p.position.x, y=p.position.y, z=p.position.z),
                rotation=p.orientation)))
    return _t("tf2_msgs/msg/TFMessage")(transforms=items)


def camera_info(K: np.ndarray, width: int, height: int, stamp: int, frame_id: str) -> object:
    """sensor_msgs/CameraInfo of a rectified pinhole camera (P = [K | 0], no distortion)."""
    P = np.zeros((3, 4))
    P[:, :3] = K
    roi = _t("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return _t("sensor_msgs/msg/CameraInfo")(
        header=header(stamp, frame_id), height=int(height), width=int(width), distortion_model="plumb_bob",
        d=np.zeros(5), k=np.asarray(K, np.float64).reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1),
        binning_x=0, binning_y=0, roi=roi)


# ---------------------------------------------------------------- outputs

def depth_image(depth: np.ndarray, stamp: int, frame_id: str) -> object:
    """sensor_msgs/Image 32FC1 in metres (REP 118)."""
    h, w = depth.shape
    data = np.ascontiguousarray(depth, "<f4").view(np.uint8).reshape(-1)
    return _t(IMAGE)(header=header(stamp, frame_id), height=h, width=w, encoding="32FC1", is_bigendian=0,
                     step=4 * w, data=data)


POINT_FIELDS = (("x", 0), ("y", 4), ("z", 8), ("density", 12), ("rgb", 16))
POINT_STEP = 20
_FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32


def point_cloud(points: np.ndarray, density: np.ndarray, rgb: np.ndarray, stamp: int, frame_id: str) -> object:
    """Unorganised sensor_msgs/PointCloud2 with float32 x, y, z, density and packed rgb (PCL layout)."""
    n = len(points)
    rec = np.zeros(n, dtype=np.dtype({"names": [f for f, _ in POINT_FIELDS],
                                      "formats": ["<f4"] * 3 + ["<f4", "<u4"],
                                      "offsets": [o for _, o in POINT_FIELDS], "itemsize": POINT_STEP}))
    rec["x"], rec["y"], rec["z"] = points[:, 0], points[:, 1], points[:, 2]
    rec["density"] = density
    rgb = rgb.astype(np.uint32)
    # RViz and PCL read rgb as a float32 field whose bytes are 0x00RRGGBB
    rec["rgb"] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    fields = [_t("sensor_msgs/msg/PointField")(name=f, offset=o, datatype=_FLOAT32, count=1)
              for f, o in POINT_FIELDS]
    return _t("sensor_msgs/msg/PointCloud2")(
        header=header(stamp, frame_id), height=1, width=n, fields=fields, is_bigendian=False,
        point_step=POINT_STEP, row_step=POINT_STEP * n, data=rec.view(np.uint8).reshape(-1), is_dense=True)


def occupancy_grid(out: Outputs) -> object:
    """nav_msgs/OccupancyGrid of the bird's-eye view, placed at the grid's lower corner."""
    spec: GridSpec = out.spec
    info = _t("nav_msgs/msg/MapMetaData")(
        map_load_time=header(out.stamp_ns, "").stamp, resolution=float(spec.resolution),
        width=spec.size_x, height=spec.size_y, origin=pose(out.T_out_cam @ spec.T_cam_grid()))
    return _t("nav_msgs/msg/OccupancyGrid")(header=header(out.stamp_ns, out.out_frame), info=info,
                                            data=out.occupancy.astype(np.int8).reshape(-1))


def density_grid(out: Outputs) -> object:
    """kdbts_ros/DensityGrid of the full 3D grid."""
    spec = out.spec
    return _t(DENSITY_GRID)(
        header=header(out.stamp_ns, out.out_frame), origin=pose(out.T_out_cam @ spec.T_cam_grid()),
        resolution=float(spec.resolution), resolution_z=float(spec.resolution_z), size_x=spec.size_x,
        size_y=spec.size_y, size_z=spec.size_z, density=out.density.astype(np.float32).reshape(-1),
        head=out.head, num_views=out.num_views)


_LEVELS = {"OK": 0, "WARN": 1, "ERROR": 2, "STALE": 3}


def diagnostics(stamp: int, name: str, hardware_id: str, level: str, message: str,
                values: dict[str, object]) -> object:
    """diagnostic_msgs/DiagnosticArray with one status."""
    kv = [_t("diagnostic_msgs/msg/KeyValue")(key=k, value=str(v)) for k, v in values.items()]
    status = _t("diagnostic_msgs/msg/DiagnosticStatus")(level=_LEVELS[level],
                                                        name=name, message=message,
                                                        hardware_id=hardware_id, values=kv)
    return _t("diagnostic_msgs/msg/DiagnosticArray")(header=header(stamp, ""), status=[status])


def output_messages(out: Outputs, topics: TopicsConfig) -> list[tuple[str, str, object]]:
    """(topic, msgtype, message) of every output a processed frame produced."""
    msgs: list[tuple[str, str, object]] = []
    if out.occupancy is not None:
        msgs.append((topics.occupancy, "nav_msgs/msg/OccupancyGrid", occupancy_grid(out)))
        msgs.append((topics.density_grid, DENSITY_GRID, density_grid(out)))
        msgs.append((topics.points, "sensor_msgs/msg/PointCloud2",
                     point_cloud(out.points, out.point_density, out.point_rgb, out.stamp_ns, out.out_frame)))
    if out.depth is not None:
        h, w = out.depth.shape
        msgs.append((topics.depth, IMAGE, depth_image(out.depth, out.stamp_ns, out.camera_frame)))
        msgs.append((topics.depth_info, "sensor_msgs/msg/CameraInfo",
                     camera_info(out.depth_K, w, h, out.stamp_ns, out.camera_frame)))
    return msgs
