"""Our message conversions equal those of the ROS libraries the node does without, where they are installed.

The node converts images, clouds and transforms itself (kdbts_ros/messages/, core/geometry.py),
shared with the tools that run without ROS. cv_bridge, sensor_msgs_py and tf_transformations are
not on PyPI (cv_bridge also needs its C++ part), so each test here runs only where its library
is importable; the messages cross through rclpy's own serialization, as between two nodes.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image, PointCloud2

from kdbts_ros.core import geometry
from kdbts_ros.messages import cdr, published, sensor_data


def _to_rclpy(msg: object, cls: type) -> object:
    return deserialize_message(cdr.serialize(msg), cls)


def _from_rclpy(msg: object, msgtype: str) -> object:
    return cdr.deserialize(serialize_message(msg), msgtype)


def test_our_point_cloud_reads_back_with_sensor_msgs_py(rng):
    point_cloud2 = pytest.importorskip("sensor_msgs_py.point_cloud2")
    points = rng.normal(size=(50, 3)).astype(np.float32)
    density = rng.random(50).astype(np.float32)
    rgb = rng.integers(0, 256, (50, 3))
    cloud = _to_rclpy(published.point_cloud(points, density, rgb, 7, "world"), PointCloud2)
    got = point_cloud2.read_points(cloud, field_names=("x", "y", "z", "density", "rgb"))
    np.testing.assert_array_equal(np.stack([got["x"], got["y"], got["z"]], axis=1), points)
    np.testing.assert_array_equal(got["density"], density)
    packed = np.ascontiguousarray(got["rgb"]).view(np.uint32)  # a float32 field holding 0x00RRGGBB, as PCL
    np.testing.assert_array_equal(np.stack([packed >> 16 & 255, packed >> 8 & 255, packed & 255], axis=1), rgb)


def test_our_images_equal_cv_bridges_both_ways(rng):
    cv_bridge = pytest.importorskip("cv_bridge")
    bridge = cv_bridge.CvBridge()
    depth = (rng.random((6, 8)) * 40).astype(np.float32)
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(_to_rclpy(published.float_image(depth, 1, "cam"), Image)), depth)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        bridge.imgmsg_to_cv2(_to_rclpy(sensor_data.rgb_image(rgb, 1, "cam"), Image), "rgb8"), rgb
    )
    for encoding, pixels, seen in (
        ("rgb8", rgb, rgb),
        ("bgr8", rgb[..., ::-1], rgb),
        ("mono8", rgb[..., 0], np.repeat(rgb[..., :1], 3, axis=2)),
    ):
        theirs = bridge.cv2_to_imgmsg(np.ascontiguousarray(pixels), encoding=encoding)
        np.testing.assert_array_equal(sensor_data.image_to_rgb(_from_rclpy(theirs, cdr.IMAGE)), seen)
    png = bridge.cv2_to_compressed_imgmsg(np.ascontiguousarray(rgb[..., ::-1]), dst_format="png")
    np.testing.assert_array_equal(sensor_data.compressed_to_rgb(_from_rclpy(png, cdr.COMPRESSED_IMAGE)), rgb)
    ours = _to_rclpy(sensor_data.compressed_image(rgb, 1, "cam", "png"), CompressedImage)
    np.testing.assert_array_equal(bridge.compressed_imgmsg_to_cv2(ours)[..., ::-1], rgb)


def test_our_transforms_equal_tf_transformations(rng):
    tft = pytest.importorskip("tf_transformations")
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        t = rng.normal(size=3)
        T = geometry.to_matrix(t, q)
        np.testing.assert_allclose(
            T, tft.concatenate_matrices(tft.translation_matrix(t), tft.quaternion_matrix(q)), atol=1e-12
        )
        back_t, back_q = geometry.from_matrix(T)
        theirs = tft.quaternion_from_matrix(T)
        np.testing.assert_allclose(back_q * np.sign(back_q @ theirs), theirs, atol=1e-12)  # q and -q: one rotation
        np.testing.assert_allclose(back_t, tft.translation_from_matrix(T), atol=1e-12)
