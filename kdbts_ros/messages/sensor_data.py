"""Sensor data as messages, both ways: raw and compressed images, camera_info and TF (what the node reads)."""

from __future__ import annotations

from typing import Any, NamedTuple

import cv2
import numpy as np

from kdbts_ros.core import geometry
from kdbts_ros.core.lens import MODELS, Lens, LensError
from kdbts_ros.messages.cdr import COMPRESSED_IMAGE, IMAGE, ConversionError, header, msg_type, pose, stamp_ns

# bytes per pixel of each raw encoding read, and how it becomes RGB (cv2 conversion codes as cv_bridge's for the
# Bayer and YUV encodings; ROS names a Bayer pattern by its first row, OpenCV by its second)
IMAGE_ENCODINGS = {
    "rgb8": 3,
    "bgr8": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
    "mono16": 2,
    "bayer_rggb8": 1,
    "bayer_bggr8": 1,
    "bayer_gbrg8": 1,
    "bayer_grbg8": 1,
    "yuv422": 2,  # UYVY byte order (sensor_msgs' YUV422)
    "uyvy": 2,
    "yuv422_yuy2": 2,  # YUYV byte order
    "yuyv": 2,
}
_TO_RGB = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV,
    "yuyv": cv2.COLOR_YUV2RGB_YUYV,
}


def image_to_rgb(msg: Any, mono16_bits: int = 16) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a sensor_msgs/Image in any of :data:`IMAGE_ENCODINGS`.

    Bayer mosaics are demosaiced and YUV 4:2:2 converted by OpenCV. Of mono16 (either byte order)
    the top 8 of its ``mono16_bits`` significant bits are kept: 16 divides by 256 as cv_bridge
    turns mono16 into mono8; a 12-bit sensor's values (0-4095) want 12.
    """
    enc = msg.encoding.lower()
    if enc not in IMAGE_ENCODINGS:
        raise ConversionError(
            f"unsupported image encoding {msg.encoding!r}; expected one of {', '.join(IMAGE_ENCODINGS)}"
        )
    c, h, w = IMAGE_ENCODINGS[enc], int(msg.height), int(msg.width)
    if h == 0 or w == 0:
        raise ConversionError(f"empty image {w}x{h}")
    if enc in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") and w % 2:
        raise ConversionError(f"{enc} image of odd width {w}: 4:2:2 pixels come in pairs")
    if msg.step < w * c or len(msg.data) < msg.step * h:
        raise ConversionError(f"image data ({len(msg.data)} bytes, step {msg.step}) too small for {w}x{h} {enc}")
    rows = np.frombuffer(msg.data, np.uint8, count=msg.step * h).reshape(h, msg.step)[:, : w * c]
    if enc == "mono16":
        values = np.ascontiguousarray(rows).view(">u2" if msg.is_bigendian else "<u2")
        grey = np.minimum(values >> (mono16_bits - 8), 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if enc in _TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(rows.reshape(h, w, c) if c > 1 else rows), _TO_RGB[enc])
    px = rows.reshape(h, w, c)
    if enc == "mono8":
        return np.repeat(px, 3, axis=2)
    rgb = px[..., :3]
    return np.ascontiguousarray(rgb[..., ::-1] if enc.startswith("bgr") else rgb)


def rgb_image(rgb: np.ndarray, stamp: int, frame_id: str) -> Any:
    """sensor_msgs/Image rgb8 from an (H, W, 3) uint8 array."""
    h, w = rgb.shape[:2]
    return msg_type(IMAGE)(
        header=header(stamp, frame_id),
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=3 * w,
        data=np.ascontiguousarray(rgb, np.uint8).reshape(-1),
    )


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
        raise ConversionError(
            f"unsupported compressed image format {fmt!r}; expected jpeg or png "
            "(image_transport's compressed transport, not compressedDepth)"
        )
    return codec


def compressed_to_rgb(msg: Any) -> np.ndarray:
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


def compressed_image(rgb: np.ndarray, stamp: int, frame_id: str, fmt: str = "jpeg", quality: int = 90) -> Any:
    """sensor_msgs/CompressedImage of an (H, W, 3) uint8 array as image_transport writes it (quality: jpeg only)."""
    if fmt not in _CODECS:
        raise ValueError(f"unsupported format {fmt!r}; expected one of {', '.join(_CODECS)}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(f".{fmt}", np.ascontiguousarray(rgb[..., ::-1], np.uint8), params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {rgb.shape} {rgb.dtype} array as {fmt}")
    return msg_type(COMPRESSED_IMAGE)(
        header=header(stamp, frame_id), format=f"rgb8; {fmt} compressed bgr8", data=buf.reshape(-1)
    )


def _is_compressed(msgtype: str) -> bool:
    """Whether an image message type is the compressed one; other message types raise ConversionError."""
    if msgtype not in (IMAGE, COMPRESSED_IMAGE):
        raise ConversionError(f"{msgtype} is not an image type; expected {IMAGE} or {COMPRESSED_IMAGE}")
    return msgtype == COMPRESSED_IMAGE


def image_format(msg: Any, msgtype: str) -> str:
    """Encoding of a raw image or format of a compressed one, to notice a camera that changes format."""
    return msg.format if _is_compressed(msgtype) else msg.encoding


def decode_image(msg: Any, msgtype: str, mono16_bits: int = 16) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a sensor_msgs/Image or sensor_msgs/CompressedImage (see :func:`image_to_rgb`)."""
    return compressed_to_rgb(msg) if _is_compressed(msgtype) else image_to_rgb(msg, mono16_bits)


class CameraModel(NamedTuple):
    """The lens a camera's images are seen through, and which part of camera_info gave it ('p' or 'k')."""

    lens: Lens
    source: str


def camera_info_lens(msg: Any, rectified: bool) -> CameraModel:
    """The lens of the images a sensor_msgs/CameraInfo describes; ConversionError says why none can be had.

    Rectified images are seen through P's left 3x3 without distortion (K only when P is all zero);
    raw images through K and D in their ``distortion_model``. A camera_info that carries only P
    (as kitti2bag's odometry bags do) describes undistorted images either way. R, the stereo
    rectification's rotation, is not applied: the canonical view is in the image's own frame_id,
    as image_proc's image_rect is.
    """
    if msg.width == 0 or msg.height == 0:
        raise ConversionError("camera_info has zero width or height")
    P = np.asarray(msg.p, np.float64).reshape(3, 4)[:, :3]
    K = np.asarray(msg.k, np.float64).reshape(3, 3)
    D = np.asarray(msg.d, np.float64).reshape(-1)
    has_p, has_k = (bool(M[0, 0] > 0 and M[1, 1] > 0) for M in (P, K))
    try:
        if has_k and not rectified and np.any(D):
            model = msg.distortion_model or "plumb_bob"
            return CameraModel(Lens(int(msg.width), int(msg.height), K, D, model), "k")
        if has_p and (rectified or not has_k):
            return CameraModel(Lens.pinhole(P, int(msg.width), int(msg.height)), "p")
        if has_k:
            return CameraModel(Lens.pinhole(K, int(msg.width), int(msg.height)), "k")
    except LensError as exc:
        raise ConversionError(f"camera_info: {exc}; feed rectified images (topics.image_geometry)") from exc
    raise ConversionError("camera_info has no usable intrinsics (P and K are zero or invalid)")


def tf_transforms(msg: Any) -> list[tuple[str, str, int, np.ndarray | None, str | None]]:
    """(parent, child, stamp_ns, T_parent_child or None, problem) of each transform in a TFMessage."""
    out = []
    for ts in msg.transforms:
        tr, rot = ts.transform.translation, ts.transform.rotation
        t = np.array([tr.x, tr.y, tr.z])
        q = np.array([rot.x, rot.y, rot.z, rot.w])
        problem = geometry.rigid_problem(t, q)
        T = None if problem else geometry.to_matrix(t, q / np.linalg.norm(q))
        out.append(
            (ts.header.frame_id.lstrip("/"), ts.child_frame_id.lstrip("/"), stamp_ns(ts.header.stamp), T, problem)
        )
    return out


def tf_message(transforms: list[tuple[str, str, int, np.ndarray]]) -> Any:
    """tf2_msgs/TFMessage from (parent, child, stamp_ns, T_parent_child) tuples."""
    items = []
    for parent, child, stamp, T in transforms:
        p = pose(T)
        items.append(
            msg_type("geometry_msgs/msg/TransformStamped")(
                header=header(stamp, parent),
                child_frame_id=child,
                transform=msg_type("geometry_msgs/msg/Transform")(
                    translation=msg_type("geometry_msgs/msg/Vector3")(x=p.position.x, y=p.position.y, z=p.position.z),
                    rotation=p.orientation,
                ),
            )
        )
    return msg_type("tf2_msgs/msg/TFMessage")(transforms=items)


def camera_info(
    K: np.ndarray,
    width: int,
    height: int,
    stamp: int,
    frame_id: str,
    D: np.ndarray | None = None,
    model: str = "plumb_bob",
) -> Any:
    """sensor_msgs/CameraInfo of a camera with P = [K | 0]: a rectified pinhole, or a lens with distortion D."""
    P = np.zeros((3, 4))
    P[:, :3] = K
    d = np.zeros(MODELS[model])
    if D is not None:
        d[: len(D)] = D
    roi = msg_type("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return msg_type("sensor_msgs/msg/CameraInfo")(
        header=header(stamp, frame_id),
        height=int(height),
        width=int(width),
        distortion_model=model,
        d=d,
        k=np.asarray(K, np.float64).reshape(-1),
        r=np.eye(3).reshape(-1),
        p=P.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )
