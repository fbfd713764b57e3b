"""Camera images in every accepted form, and malformed input messages thrown at the conversion layer.

Everything here is built with rosbags and OpenCV, so it runs without a ROS installation.
"""

import dataclasses
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kdbts_ros.messages import cdr, sensor_data

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
# the encodings robots send beside them (sensor_msgs' image_encodings names), bytes per pixel
ROBOT_CHANNELS = {"mono16": 2, "bayer_rggb8": 1, "bayer_gbrg8": 1, "yuv422": 2, "yuv422_yuy2": 2, "yuyv": 2, "uyvy": 2}
PAIRED = ("yuv422", "yuv422_yuy2", "yuyv", "uyvy")  # 4:2:2: two pixels share their chroma, so widths are even
PROPERTY = settings(max_examples=150, deadline=None)


def _t(name: str):
    return cdr.typestore().types[name]


def raw_image(pixels: np.ndarray, encoding: str, pad: int = 0) -> object:
    """sensor_msgs/Image of (H, W[, C]) uint8 pixels with ``pad`` filler bytes after each row."""
    h, w = pixels.shape[:2]
    rows = np.concatenate([pixels.reshape(h, -1), np.full((h, pad), 77, np.uint8)], axis=1)
    return _t(cdr.IMAGE)(
        header=cdr.header(5, "cam"),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=rows.shape[1],
        data=rows.reshape(-1),
    )


def compressed(data: bytes | np.ndarray, fmt: str) -> object:
    return _t(cdr.COMPRESSED_IMAGE)(header=cdr.header(5, "cam"), format=fmt, data=np.frombuffer(bytes(data), np.uint8))


def encode(ext: str, pixels: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, pixels)
    assert ok
    return buf.tobytes()


def through_cdr(msg: object, msgtype: str) -> object:
    return cdr.deserialize(cdr.serialize(msg), msgtype)


def smooth_rgb(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    return np.stack([200 * x + 20, 150 * y + 40, 100 * (x + y) / 2 + 60], -1).astype(np.uint8)


# ---------------------------------------------------------------- raw images


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", list(CHANNELS))
def test_raw_encodings_decode_to_rgb(rng, encoding, pad):
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    alpha = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    grey = g
    pixels = {
        "rgb8": np.stack([r, g, b], -1),
        "bgr8": np.stack([b, g, r], -1),
        "rgba8": np.stack([r, g, b, alpha], -1),
        "bgra8": np.stack([b, g, r, alpha], -1),
        "mono8": grey,
    }[encoding]
    msg = through_cdr(raw_image(pixels, encoding, pad), cdr.IMAGE)
    assert msg.step == 7 * CHANNELS[encoding] + pad
    expected = np.stack([grey] * 3, -1) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(sensor_data.decode_image(msg, cdr.IMAGE), expected)
    assert sensor_data.image_format(msg, cdr.IMAGE) == encoding


def bayer_mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The one-channel mosaic a Bayer sensor records: ``pattern`` names the colours of a 2x2 cell row by row."""
    mosaic = np.zeros(rgb.shape[:2], np.uint8)
    for (dy, dx), colour in zip(((0, 0), (0, 1), (1, 0), (1, 1)), pattern, strict=True):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)]
    return mosaic


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_mosaics_are_demosaiced_to_the_scene_colours(pattern):
    rgb = smooth_rgb()
    msg = through_cdr(raw_image(bayer_mosaic(rgb, pattern), f"bayer_{pattern}8", pad=3), cdr.IMAGE)
    out = sensor_data.decode_image(msg, cdr.IMAGE).astype(int)
    # a smooth scene: demosaicing recovers it inside the border (a swapped pattern is 25-37 levels off)
    assert np.abs(out[2:-2, 2:-2] - rgb[2:-2, 2:-2]).mean() < 1.0


def yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Packed 4:2:2 bytes (H, W * 2) of an RGB image in ITU-R BT.601 studio range (Y 16-235), pixel pairs
    sharing their mean U and V; ``order`` 'uyvy' or 'yuyv'."""
    r, g, b = (rgb[..., k].astype(np.float64) / 255 for k in range(3))
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    u2, v2 = (u[:, 0::2] + u[:, 1::2]) / 2, (v[:, 0::2] + v[:, 1::2]) / 2
    parts = {"y0": y[:, 0::2], "y1": y[:, 1::2], "u": u2, "v": v2}
    names = ("u", "y0", "v", "y1") if order == "uyvy" else ("y0", "u", "y1", "v")
    return np.rint(np.stack([parts[n] for n in names], -1)).astype(np.uint8).reshape(rgb.shape[0], -1)


@pytest.mark.parametrize(
    ("encoding", "order"), [("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")]
)
def test_yuv422_images_decode_in_their_byte_order(encoding, order):
    rgb = smooth_rgb()
    msg = raw_image(yuv422(rgb, order), encoding)
    msg.width = rgb.shape[1]  # two bytes a pixel
    out = sensor_data.decode_image(through_cdr(msg, cdr.IMAGE), cdr.IMAGE).astype(int)
    assert out.shape == rgb.shape and np.abs(out - rgb).mean() < 3.0  # the other order is far off
    odd = raw_image(yuv422(rgb, order)[:, :-2], encoding)
    odd.width = rgb.shape[1] - 1
    with pytest.raises(cdr.ConversionError, match="odd width"):
        sensor_data.decode_image(odd, cdr.IMAGE)


@pytest.mark.parametrize("bigendian", [0, 1])
@pytest.mark.parametrize("bits", [16, 12])
def test_mono16_keeps_the_top_8_of_its_significant_bits_in_either_byte_order(rng, bigendian, bits):
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint16)
    low = bits - 8  # the bits below the top 8
    value = (grey << low) + rng.integers(0, 1 << low, (5, 7), dtype=np.uint16)
    if bits < 16:
        value[0, 0] = 65535  # a value beyond the stated bits saturates
    data = value.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(5, 14)
    msg = raw_image(data, "mono16")
    msg.width, msg.is_bigendian = 7, bigendian
    out = sensor_data.decode_image(through_cdr(msg, cdr.IMAGE), cdr.IMAGE, mono16_bits=bits)
    want = grey.astype(np.uint8)
    if bits < 16:
        want[0, 0] = 255
    np.testing.assert_array_equal(out, np.repeat(want[..., None], 3, 2))


def test_image_msgtype_follows_image_transport_topic_names():
    assert sensor_data.image_msgtype("/cam/image_raw/compressed") == cdr.COMPRESSED_IMAGE
    assert sensor_data.image_msgtype("compressed") == cdr.COMPRESSED_IMAGE
    assert sensor_data.image_msgtype("/cam/image_raw") == cdr.IMAGE
    assert sensor_data.image_msgtype("/cam/compressed/image_raw") == cdr.IMAGE
    assert sensor_data.image_msgtype("/cam/image_compressed") == cdr.IMAGE


def test_non_image_types_are_rejected():
    msg = sensor_data.rgb_image(np.zeros((2, 2, 3), np.uint8), 0, "cam")
    with pytest.raises(cdr.ConversionError, match="not an image type"):
        sensor_data.decode_image(msg, "sensor_msgs/msg/CameraInfo")
    with pytest.raises(cdr.ConversionError, match="not an image type"):
        sensor_data.image_format(msg, "sensor_msgs/msg/CameraInfo")


# ---------------------------------------------------------------- compressed images


def test_png_round_trip_is_exact_for_colour_mono_and_alpha(rng):
    rgb = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (6, 9), dtype=np.uint8)
    bgra = np.dstack([rgb[..., ::-1], rng.integers(0, 256, (6, 9), dtype=np.uint8)])
    cases = [
        ("bgr8; png compressed bgr8", encode(".png", rgb[..., ::-1]), rgb),
        ("png", encode(".png", rgb[..., ::-1]), rgb),
        ("mono8; png compressed ", encode(".png", grey), np.stack([grey] * 3, -1)),  # image_transport's mono png
        ("bgra8; png compressed bgra8", encode(".png", bgra), rgb),
    ]
    for fmt, data, expected in cases:
        msg = through_cdr(compressed(data, fmt), cdr.COMPRESSED_IMAGE)
        np.testing.assert_array_equal(sensor_data.decode_image(msg, cdr.COMPRESSED_IMAGE), expected, err_msg=fmt)
        assert sensor_data.image_format(msg, cdr.COMPRESSED_IMAGE) == fmt
    built = through_cdr(sensor_data.compressed_image(rgb, 7, "cam", fmt="png"), cdr.COMPRESSED_IMAGE)
    assert built.format == "rgb8; png compressed bgr8" and cdr.stamp_ns(built.header.stamp) == 7
    np.testing.assert_array_equal(sensor_data.compressed_to_rgb(built), rgb)


def test_jpeg_round_trip_of_a_smooth_image_is_close():
    rgb = smooth_rgb()
    for msg in (
        sensor_data.compressed_image(rgb, 0, "cam", quality=95),
        compressed(encode(".jpg", rgb[..., ::-1]), "jpg"),
    ):  # cv_bridge's default format string
        err = np.abs(sensor_data.compressed_to_rgb(through_cdr(msg, cdr.COMPRESSED_IMAGE)).astype(int) - rgb)
        assert err.mean() < 1.5 and err.max() <= 12, (msg.format, err.mean(), err.max())
    grey = rgb[..., 1]
    out = sensor_data.compressed_to_rgb(compressed(encode(".jpg", grey), "mono8; jpeg compressed mono8"))
    assert out.shape == (48, 64, 3) and np.array_equal(out[..., 0], out[..., 2])
    assert np.abs(out[..., 0].astype(int) - grey).mean() < 1.5


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_red_stays_red(fmt):
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    # the raw encoding before ';' says rgb8, but the file holds what OpenCV encoded from BGR
    for msg in (
        sensor_data.compressed_image(red, 0, "cam", fmt=fmt),
        compressed(encode(f".{fmt}", red[..., ::-1]), f"rgb8; {fmt} compressed bgr8"),
    ):
        out = sensor_data.compressed_to_rgb(msg)
        assert out[..., 0].min() > 240 and out[..., 2].max() < 15, (msg.format, out[0, 0])


def test_zero_padding_after_the_end_marker_is_accepted():
    rgb = smooth_rgb(8, 8)
    jpeg = encode(".jpg", rgb)
    padded = sensor_data.compressed_to_rgb(compressed(jpeg + bytes(64), "jpeg"))
    assert padded.shape == (8, 8, 3)
    # the padding is ignored, not decoded: the same pixels as the file without it
    np.testing.assert_array_equal(padded, sensor_data.compressed_to_rgb(compressed(jpeg, "jpeg")))


def png_claiming(w: int, h: int) -> bytes:
    """A well-formed png whose header claims w x h RGB pixels, with almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(bytes(100)))
        + chunk(b"IEND", b"")
    )


JPEG = encode(".jpg", smooth_rgb(24, 32))
PNG = encode(".png", smooth_rgb(24, 32))


@pytest.mark.parametrize(
    "fmt, data, reason",
    [
        ("rgb8; jpeg compressed bgr8", b"", "empty jpeg"),
        ("rgb8; jpeg compressed bgr8", b"not an image at all", "not a complete jpeg"),
        ("rgb8; jpeg compressed bgr8", JPEG[: len(JPEG) // 2], "not a complete jpeg"),
        ("rgb8; jpeg compressed bgr8", JPEG[:-1], "not a complete jpeg"),
        ("bgr8; png compressed bgr8", PNG[:-20], "not a complete png"),
        ("jpeg", PNG, "not a complete jpeg"),
        ("png", JPEG, "not a complete png"),
        ("jpeg", b"\xff\xd8\xff" + bytes(40) + b"\xff\xd9", "cannot decode jpeg"),
        ("png", png_claiming(40_000, 40_000), "cannot decode png"),  # beyond OpenCV's pixel limit: cv2.error
        ("16UC1; compressedDepth png", PNG, "compressedDepth"),
        ("rgb8; tiff compressed bgr8", PNG, "unsupported compressed image format 'rgb8; tiff"),
        ("bmp", encode(".bmp", smooth_rgb(4, 4)), "unsupported compressed image format 'bmp'"),
        ("", JPEG, "unsupported compressed image format ''"),
        ("rgb8;", JPEG, "unsupported compressed image format"),
        ("mono16; png compressed ", encode(".png", np.full((4, 4), 4000, np.uint16)), "uint16 png .* only 8-bit"),
        ("rgb16; png compressed bgr16", encode(".png", np.full((4, 4, 3), 4000, np.uint16)), "only 8-bit"),
    ],
    ids=lambda v: f"{len(v)} bytes" if isinstance(v, bytes) else None,
)
def test_bad_compressed_images_are_rejected_with_a_reason(fmt, data, reason):
    with pytest.raises(cdr.ConversionError, match=reason):
        sensor_data.decode_image(compressed(data, fmt), cdr.COMPRESSED_IMAGE)


def test_compressed_image_builder_rejects_unknown_formats():
    with pytest.raises(ValueError, match="unsupported format 'webp'"):
        sensor_data.compressed_image(smooth_rgb(4, 4), 0, "cam", fmt="webp")


# ---------------------------------------------------------------- malformed messages (property-based)

ENCODINGS = list(CHANNELS | ROBOT_CHANNELS) + ["RGB8", "Mono8", "16UC1", "32FC1", "bayer_rggb16", "rgb8 ", ""]
DIMS = st.one_of(st.integers(0, 12), st.just(2**32 - 1))
IMAGE_FIELDS = ("encoding", "height", "width", "step", "size")


@st.composite
def raw_images(draw) -> tuple[object, bool]:
    """(Image, well formed): half well formed, else with one field or every field corrupted."""
    enc = draw(st.sampled_from(list(CHANNELS | ROBOT_CHANNELS)))
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    w += w % 2 if enc in PAIRED else 0
    step = w * (CHANNELS | ROBOT_CHANNELS)[enc] + draw(st.integers(0, 3))
    size = step * h + draw(st.integers(0, 3))
    mode = draw(st.sampled_from(["good", "good", "one field", "all fields"]))
    bad = {"good": (), "one field": (draw(st.sampled_from(IMAGE_FIELDS)),), "all fields": IMAGE_FIELDS}[mode]
    if "encoding" in bad:
        enc = draw(st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=12)))
    if "height" in bad:
        h = draw(DIMS)
    if "width" in bad:
        w = draw(DIMS)
    if "step" in bad:
        step = draw(DIMS | st.integers(0, 64))
    if "size" in bad:
        size = draw(st.integers(0, 400))
    msg = _t(cdr.IMAGE)(
        header=cdr.header(1, "cam"),
        height=h,
        width=w,
        encoding=enc,
        is_bigendian=0,
        step=step,
        data=np.frombuffer(draw(st.binary(min_size=size, max_size=size)), np.uint8),
    )
    c = (CHANNELS | ROBOT_CHANNELS).get(enc.lower())
    paired = enc.lower() not in PAIRED or w % 2 == 0
    return msg, c is not None and h > 0 and w > 0 and paired and step >= w * c and size >= step * h


@PROPERTY
@given(raw_images())
def test_malformed_raw_images_are_rejected_cleanly(case):
    msg, valid = case
    event("valid" if valid else "invalid")
    try:
        rgb = sensor_data.decode_image(msg, cdr.IMAGE)
    except cdr.ConversionError:
        assert not valid, "a well-formed image was rejected"
        return
    assert valid and rgb.shape == (msg.height, msg.width, 3) and rgb.dtype == np.uint8


SOURCES = {
    "jpeg": encode(".jpg", smooth_rgb(6, 9)),
    "mono jpeg": encode(".jpg", smooth_rgb(6, 9)[..., 0]),
    "png": encode(".png", smooth_rgb(6, 9)),
    "mono png": encode(".png", smooth_rgb(6, 9)[..., 0]),
    "bgra png": encode(".png", np.dstack([smooth_rgb(6, 9), smooth_rgb(6, 9)[..., :1]])),
}
SIXTEEN_BIT_PNG = encode(".png", smooth_rgb(6, 9).astype(np.uint16) * 200)
# format strings that fit each codec, as image_transport, cv_bridge and plain drivers write them
FITTING = {
    "jpeg": [
        "jpeg",
        "jpg",
        "JPEG",
        "rgb8; jpeg compressed bgr8",
        "mono8; jpeg compressed mono8",
        "yuv422; jpeg compressed mono8",
    ],
    "png": ["png", "bgr8; png compressed bgr8", "mono8; png compressed ", "bgra8; png compressed bgra8"],
}
UNFITTING = [
    "16UC1; compressedDepth png",
    "32FC1; compressedDepth",
    "rgb8; tiff compressed bgr8",
    "tiff",
    "",
    ";",
    "rgb8",
    "png compressed jpeg",
    "rgb8; compressed jpeg",
]


@st.composite
def compressed_images(draw) -> tuple[object, bool]:
    """(CompressedImage, well formed): often a valid jpeg or png under a fitting format, else damaged or mislabelled."""
    source = draw(st.sampled_from(sorted(SOURCES)))
    data = SOURCES[source]
    codec = "png" if "png" in source else "jpeg"
    fmt = draw(st.sampled_from(FITTING[codec]))
    mode = draw(
        st.sampled_from(
            ["good"] * 4
            + [
                "truncated",
                "flipped byte",
                "appended",
                "16-bit",
                "random bytes",
                "random body",
                "other format",
                "random format",
            ]
        )
    )
    if mode == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif mode == "flipped byte":
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    elif mode == "appended":
        data += draw(st.binary(min_size=1, max_size=16))
    elif mode == "16-bit":
        data = SIXTEEN_BIT_PNG
    elif mode == "random bytes":
        data = draw(st.binary(max_size=200))
    elif mode == "random body":  # passes the marker checks, so the decoder itself meets the garbage
        data = data[:8] + draw(st.binary(max_size=200)) + data[-12:]
    elif mode == "other format":
        fmt = draw(st.sampled_from(UNFITTING + FITTING["png" if codec == "jpeg" else "jpeg"]))
    elif mode == "random format":
        fmt = draw(st.text(max_size=30))
    return compressed(data, fmt), mode == "good"


@PROPERTY
@given(compressed_images())
def test_malformed_compressed_images_are_rejected_cleanly(case):
    msg, valid = case
    event("valid" if valid else "invalid")
    try:
        rgb = sensor_data.decode_image(msg, cdr.COMPRESSED_IMAGE)
    except cdr.ConversionError:
        assert not valid, f"a well-formed {msg.format!r} image was rejected"
        return
    event("invalid but decoded" if not valid else "valid and decoded")
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8 and rgb.size > 0
    if valid:
        # the pixels OpenCV's own colour decode of the file gives (grey repeated, alpha dropped), as RGB
        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(rgb, bgr[..., ::-1])
        assert rgb.shape == (6, 9, 3)


def _tf(translation, quat) -> object:
    return _t("geometry_msgs/msg/TransformStamped")(
        header=cdr.header(3, "odom"),
        child_frame_id="base",
        transform=_t("geometry_msgs/msg/Transform")(
            translation=_t("geometry_msgs/msg/Vector3")(x=translation[0], y=translation[1], z=translation[2]),
            rotation=_t("geometry_msgs/msg/Quaternion")(x=quat[0], y=quat[1], z=quat[2], w=quat[3]),
        ),
    )


SAMPLES = {
    cdr.IMAGE: sensor_data.rgb_image(smooth_rgb(3, 4), 1, "cam"),
    cdr.COMPRESSED_IMAGE: sensor_data.compressed_image(smooth_rgb(3, 4), 1, "cam"),
    "sensor_msgs/msg/CameraInfo": sensor_data.camera_info(np.diag([100.0, 100.0, 1.0]), 4, 3, 1, "cam"),
    "tf2_msgs/msg/TFMessage": _t("tf2_msgs/msg/TFMessage")(transforms=[_tf((1.0, 2.0, 3.0), (0, 0, 0, 1.0))]),
}


@PROPERTY
@given(
    msgtype=st.sampled_from(sorted(SAMPLES)),
    how=st.sampled_from(["random", "truncated", "flipped byte"]),
    data=st.data(),
)
def test_random_bytes_never_crash_deserialize(msgtype, how, data):
    good = cdr.serialize(SAMPLES[msgtype])
    if how == "random":
        raw = data.draw(st.binary(max_size=300))
    elif how == "truncated":
        raw = good[: data.draw(st.integers(0, len(good) - 1))]
    else:
        i = data.draw(st.integers(0, len(good) - 1))
        raw = good[:i] + bytes([good[i] ^ data.draw(st.integers(1, 255))]) + good[i + 1 :]
    try:
        msg = cdr.deserialize(raw, msgtype)
    except cdr.ConversionError:
        event("rejected")
        return
    event("decoded")
    assert msg.__msgtype__ == msgtype


ODD_FLOATS = st.sampled_from([0.0, -1.0, -500.0, np.nan, np.inf, -np.inf])


@st.composite
def camera_infos(draw) -> object:
    """A CameraInfo whose K and P are mostly plausible, with NaN, inf, zero or negative entries mixed in."""
    fx, fy, cx, cy = (draw(st.floats(1, 3000)) for _ in range(4))
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    P = np.hstack([K, [[draw(st.floats(-100, 100))], [0], [0]]])
    for mat in (K, P):
        for _ in range(draw(st.integers(0, 2))):
            mat.flat[draw(st.integers(0, mat.size - 1))] = draw(ODD_FLOATS | st.floats(-3000, 3000))
    if draw(st.booleans()):
        P[:] = 0.0  # P unset: K is used
    info = sensor_data.camera_info(np.eye(3), 1, 1, 0, "cam")
    return dataclasses.replace(
        info, k=K.reshape(-1), p=P.reshape(-1), width=draw(st.integers(0, 4000)), height=draw(st.integers(0, 4000))
    )


@PROPERTY
@given(camera_infos())
def test_camera_info_intrinsics_are_usable_or_rejected(info):
    # P's left 3x3 whenever its focal lengths are set (rectified images), else K; refused when that matrix is
    # not finite with positive focal lengths, or the image size is zero
    P, K_msg = np.asarray(info.p).reshape(3, 4), np.asarray(info.k).reshape(3, 3)
    from_p = bool(P[0, 0] > 0 and P[1, 1] > 0)
    chosen = P[:, :3] if from_p else K_msg
    usable = bool(
        np.all(np.isfinite(chosen)) and chosen[0, 0] > 0 and chosen[1, 1] > 0 and info.width > 0 and info.height > 0
    )
    try:
        lens, src = sensor_data.camera_info_lens(info, rectified=True)
        K, w, h = lens.K, lens.width, lens.height
    except cdr.ConversionError:
        event("rejected")
        assert not usable, "usable intrinsics were rejected"
        return
    event(f"accepted from {src}")
    assert usable and src == ("p" if from_p else "k")
    np.testing.assert_array_equal(K, chosen)
    assert (w, h) == (info.width, info.height)


@st.composite
def transforms(draw) -> tuple[list, tuple, bool]:
    """(translation, quaternion xyzw, rigid): mostly rigid, else NaN/inf, zero or non-unit quaternions."""
    t = [draw(st.floats(-100, 100)) for _ in range(3)]
    q = np.array([draw(st.floats(-1, 1)) for _ in range(4)])
    kind = draw(st.sampled_from(["unit", "unit", "unit", "scaled", "zero", "not finite"]))
    if kind in ("unit", "scaled"):
        q = q / np.linalg.norm(q) if np.linalg.norm(q) > 1e-3 else np.array([0.0, 0.0, 0.0, 1.0])
        q *= draw(st.floats(0, 3)) if kind == "scaled" else 1.0
    elif kind == "zero":
        q = np.zeros(4)
    else:
        target = t if draw(st.booleans()) else q
        target[draw(st.integers(0, 2))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    rigid = bool(np.all(np.isfinite(t)) and np.all(np.isfinite(q)) and abs(np.linalg.norm(q) - 1) <= 1e-3)
    return t, tuple(float(v) for v in q), rigid


@PROPERTY
@given(st.lists(transforms(), min_size=1, max_size=4))
def test_tf_transforms_flag_bad_transforms_and_keep_good_ones_rigid(items):
    msg = through_cdr(
        _t("tf2_msgs/msg/TFMessage")(transforms=[_tf(t, q) for t, q, _ in items]), "tf2_msgs/msg/TFMessage"
    )
    out = sensor_data.tf_transforms(msg)
    assert len(out) == len(items)
    for (t, _q, rigid), (parent, child, stamp, T, problem) in zip(items, out):
        event("rigid" if rigid else "bad")
        assert (parent, child, stamp) == ("odom", "base", 3)
        if not rigid:
            assert T is None
            if not (np.all(np.isfinite(t)) and np.all(np.isfinite(_q))):
                assert problem == "non-finite transform"
            else:
                assert problem == f"quaternion norm {np.linalg.norm(_q):.4f} is not 1"
            continue
        assert problem is None and T.shape == (4, 4)
        R = T[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert abs(np.linalg.det(R) - 1) < 1e-9
        np.testing.assert_array_equal(T[3], [0, 0, 0, 1])
        np.testing.assert_array_equal(T[:3, 3], t)
