"""Our rosbags-based encoding against rclpy's own (C typesupport) serialization, both ways."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdbts_ros.messages import cdr, published, sensor_data

rclpy_serialization = pytest.importorskip("rclpy.serialization")
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2  # noqa: E402


def _rclpy_image(arr: np.ndarray, encoding: str, pad: int = 0) -> bytes:
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, : w * c] = arr.reshape(h, -1)
    msg = Image(height=h, width=w, encoding=encoding, step=w * c + pad, data=rows.tobytes())
    msg.header.frame_id = "cam"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
    return rclpy_serialization.serialize_message(msg)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_image_decoding_of_every_encoding(rng, encoding):
    c = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}[encoding]
    arr = rng.integers(0, 256, (5, 7, c) if c > 1 else (5, 7), dtype=np.uint8)
    msg = cdr.deserialize(_rclpy_image(arr, encoding, pad=3), "sensor_msgs/msg/Image")
    rgb = sensor_data.image_to_rgb(msg)
    expected = {
        "rgb8": lambda a: a,
        "bgr8": lambda a: a[..., ::-1],
        "rgba8": lambda a: a[..., :3],
        "bgra8": lambda a: a[..., 2::-1],
        "mono8": lambda a: np.stack([a] * 3, -1),
    }[encoding](arr)
    np.testing.assert_array_equal(rgb, expected)
    assert cdr.stamp_ns(msg.header.stamp) == 12 * 10**9 + 345


def test_bad_images_are_rejected_with_a_reason(rng):
    with pytest.raises(cdr.ConversionError, match="unsupported image encoding"):
        sensor_data.image_to_rgb(
            cdr.deserialize(_rclpy_image(np.zeros((2, 2), np.uint16), "16UC1"), "sensor_msgs/msg/Image")
        )
    short = Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(20))
    with pytest.raises(cdr.ConversionError, match="too small"):
        sensor_data.image_to_rgb(cdr.deserialize(rclpy_serialization.serialize_message(short), "sensor_msgs/msg/Image"))
    with pytest.raises(cdr.ConversionError):
        cdr.deserialize(b"\x00\x01\x00\x00garbage", "sensor_msgs/msg/Image")


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(0, 6),
    w=st.integers(0, 6),
    step=st.integers(0, 30),
    n=st.integers(0, 120),
    enc=st.sampled_from(["rgb8", "bgr8", "mono8", "rgba8", "yuv422", "", "RGB8"]),
)
def test_malformed_images_never_crash_the_decoder(h, w, step, n, enc):
    msg = cdr.deserialize(
        rclpy_serialization.serialize_message(Image(height=h, width=w, encoding=enc, step=step, data=bytes(n))),
        "sensor_msgs/msg/Image",
    )
    try:
        rgb = sensor_data.image_to_rgb(msg)
    except cdr.ConversionError:
        return
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8


def test_compressed_images_cross_rclpy_both_ways(rng):
    rgb = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    ours = rclpy_serialization.deserialize_message(
        cdr.serialize(sensor_data.compressed_image(rgb, 3, "cam", fmt="png")), CompressedImage
    )
    assert ours.format == "rgb8; png compressed bgr8" and ours.header.frame_id == "cam"
    theirs = CompressedImage(format=ours.format, data=bytes(ours.data))  # as image_transport publishes it
    msg = cdr.deserialize(rclpy_serialization.serialize_message(theirs), cdr.COMPRESSED_IMAGE)
    np.testing.assert_array_equal(sensor_data.decode_image(msg, cdr.COMPRESSED_IMAGE), rgb)


def test_point_cloud_bytes_decode_with_rclpy(rng):
    pts = rng.normal(size=(40, 3)).astype(np.float32)
    dens = rng.uniform(0, 5, 40).astype(np.float32)
    rgb = rng.integers(0, 256, (40, 3), dtype=np.uint8)
    data = cdr.serialize(published.point_cloud(pts, dens, rgb, 5 * 10**9 + 7, "odom"))
    msg = rclpy_serialization.deserialize_message(data, PointCloud2)
    assert msg.header.frame_id == "odom" and msg.header.stamp.sec == 5 and msg.header.stamp.nanosec == 7
    assert (msg.width, msg.height, msg.point_step, msg.row_step) == (40, 1, 20, 800)
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(40, 20)
    offsets = {f.name: f.offset for f in msg.fields}
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1),
        ("y", 4, 7, 1),
        ("z", 8, 7, 1),
        ("density", 12, 7, 1),
        ("rgb", 16, 7, 1),
    ]  # 7: FLOAT32
    for i, name in enumerate("xyz"):
        col = raw[:, offsets[name] : offsets[name] + 4].copy().view("<f4")[:, 0]
        np.testing.assert_array_equal(col, pts[:, i])
    np.testing.assert_array_equal(raw[:, offsets["density"] : offsets["density"] + 4].copy().view("<f4")[:, 0], dens)
    packed = raw[:, offsets["rgb"] : offsets["rgb"] + 4].copy().view("<u4")[:, 0]
    np.testing.assert_array_equal(np.stack([packed >> 16, (packed >> 8) & 255, packed & 255], 1), rgb)


def test_depth_image_and_camera_info_decode_with_rclpy(rng):
    depth = rng.uniform(3, 80, (6, 9)).astype(np.float32)
    msg = rclpy_serialization.deserialize_message(cdr.serialize(published.float_image(depth, 3, "cam")), Image)
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ("32FC1", 6, 9, 36, 0)
    np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), "<f4").reshape(6, 9), depth)
    K = np.array([[100.0, 0, 4.0], [0, 110.0, 2.5], [0, 0, 1]])
    info = rclpy_serialization.deserialize_message(
        cdr.serialize(sensor_data.camera_info(K, 9, 6, 3, "cam")), CameraInfo
    )
    np.testing.assert_array_equal(np.array(info.p).reshape(3, 4)[:, :3], K)
    np.testing.assert_array_equal(np.array(info.k).reshape(3, 3), K)


def _lens(info: CameraInfo, rectified: bool) -> sensor_data.CameraModel:
    return sensor_data.camera_info_lens(
        cdr.deserialize(rclpy_serialization.serialize_message(info), "sensor_msgs/msg/CameraInfo"), rectified
    )


def test_camera_info_gives_rectified_images_p_and_raw_images_k_with_their_distortion():
    info = CameraInfo(width=1242, height=375)
    info.k = [959.79, 0.0, 696.02, 0.0, 956.93, 224.18, 0.0, 0.0, 1.0]  # unrectified K_02 (KITTI)
    info.d = [-0.37, 0.20, 0.0022, 0.0014, -0.072]
    info.distortion_model = "plumb_bob"
    info.p = [721.54, 0.0, 609.56, 44.86, 0.0, 721.54, 172.85, 0.22, 0.0, 0.0, 1.0, 0.0]
    lens, src = _lens(info, rectified=True)
    assert src == "p" and (lens.width, lens.height) == (1242, 375) and lens.K[0, 0] == 721.54
    assert lens.K[0, 2] == 609.56 and not lens.distorted
    lens, src = _lens(info, rectified=False)
    assert src == "k" and lens.K[0, 0] == 959.79 and lens.model == "plumb_bob"
    assert np.allclose(lens.D, info.d)
    info.p = [0.0] * 12
    assert _lens(info, rectified=True).source == "k"
    # a camera_info with only P (kitti2bag's odometry bags) describes undistorted images either way
    only_p = CameraInfo(width=1241, height=376)
    only_p.p = [718.86, 0.0, 607.19, 0.0, 0.0, 718.86, 185.22, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert _lens(only_p, rectified=False) == _lens(only_p, rectified=True)
    assert _lens(only_p, rectified=False).lens.K[1, 2] == 185.22
    info.k = [0.0] * 9
    with pytest.raises(cdr.ConversionError, match="no usable intrinsics"):
        _lens(info, rectified=True)


def test_occupancy_grid_from_pipeline_outputs_decodes_with_rclpy():
    from conftest import small_config

    from kdbts_ros.core.frames import Frame
    from kdbts_ros.data.sequences import T_base_cam
    from kdbts_ros.runtime.runner import FrameRunner

    cfg = small_config(**{"planner.frame": "camera"})  # the camera slab's grid (the planner's: test_planner)
    T = T_base_cam()
    out = FrameRunner(cfg).process(
        Frame(np.full((40, 120, 3), 90, np.uint8), np.array([[60.0, 0, 60], [0, 60, 20], [0, 0, 1]]), 99, "cam", T),
        want_depth=False,
    )
    msg = rclpy_serialization.deserialize_message(cdr.serialize(published.occupancy_grid(out)), OccupancyGrid)
    assert msg.header.frame_id == cfg.fixed_frame
    assert (msg.info.width, msg.info.height) == (out.spec.size_x, out.spec.size_y)
    np.testing.assert_array_equal(np.array(msg.data, np.int8).reshape(out.spec.size_y, -1), out.occupancy)
    # the grid origin is the corner (x_min, y_max, z_min) of the camera, expressed in the fixed frame
    o = msg.info.origin.position
    np.testing.assert_allclose([o.x, o.y, o.z], (T @ [cfg.grid.x_min, cfg.grid.y_max, cfg.grid.z_min, 1])[:3])
