"""kdbts kitti2bag: every message decodes, TF composes to the calibration, QoS and camera_info conventions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import KITTI_SAMPLE, needs_kitti, read_bag
from rosbags.interfaces import QosDurability, QosReliability
from test_kitti_loaders import devkit_T_cam2_velo, write_odometry

from kdbts_ros.commands.cli import main
from kdbts_ros.core.errors import EXIT_USER
from kdbts_ros.core.tf_buffer import TfBuffer
from kdbts_ros.data import shared_sample
from kdbts_ros.data.kitti_bag import KITTI, KITTI360, write_recording_bag
from kdbts_ros.data.kitti_odometry import load_odometry_sequence
from kdbts_ros.data.records import read_velodyne
from kdbts_ros.messages import cdr, sensor_data

pytestmark = pytest.mark.integration


def tf_buffer(msgs) -> TfBuffer:
    buf = TfBuffer()
    for topic, _, msg in msgs:
        if topic in ("/tf", "/tf_static"):
            for parent, child, stamp, T, problem in sensor_data.tf_transforms(msg):
                assert problem is None
                buf.set_transform(parent, child, stamp, T, topic == "/tf_static")
    return buf


@needs_kitti
def test_raw_sample_bag_round_trip(tmp_path):
    rec = shared_sample.raw_sample(KITTI_SAMPLE)
    counts = write_recording_bag(rec, tmp_path / "bag", KITTI, max_frames=3, progress=False)
    assert counts == {
        "/tf_static": 1,
        "/clock": 3,
        "/tf": 3,
        "/kitti/camera_color_left/camera_info": 3,
        "/kitti/camera_color_left/image_raw": 3,
        "/kitti/velo/pointcloud": 3,
    }
    assert list((tmp_path / "bag").glob("*.mcap"))
    msgs, qos = read_bag(tmp_path / "bag")
    assert len(msgs) == sum(counts.values())
    static = qos["/tf_static"][0]
    assert static.durability == QosDurability.TRANSIENT_LOCAL and static.reliability == QosReliability.RELIABLE
    buf = tf_buffer(msgs)
    for f in rec.frames[:3]:
        # world -> base_link -> camera composes to the loader's camera pose (the ORB-SLAM chain)
        # (TF carries unit quaternions; the 7-digit calibration rotations are orthonormal to ~1e-7)
        np.testing.assert_allclose(buf.lookup("world", "camera_color_left", f.stamp_ns), f.T_world_cam(0), atol=1e-6)
    # camera <- velo_link from the bag's TF equals the devkit's P_rect chain (up to K)
    T_cam_velo = buf.lookup("camera_color_left", "velo_link", rec.frames[0].stamp_ns)
    np.testing.assert_allclose(T_cam_velo, devkit_T_cam2_velo(), atol=1e-6)
    # base_footprint (the KITTI presets' planner frame): level under the IMU, the camera 1.65 m above it
    T_foot_cam = buf.lookup("base_footprint", "camera_color_left", rec.frames[0].stamp_ns)
    assert T_foot_cam[2, 3] == pytest.approx(1.65, abs=0.03) and T_foot_cam[2, 1] < -0.99
    by_topic: dict[str, list] = {}
    for topic, stamp, msg in msgs:
        by_topic.setdefault(topic, []).append((stamp, msg))
    info = by_topic["/kitti/camera_color_left/camera_info"][0][1]
    K = np.array(info.k).reshape(3, 3)
    np.testing.assert_allclose(np.array(info.p).reshape(3, 4), np.c_[K, np.zeros(3)])
    np.testing.assert_allclose(K[0], [721.5377, 0, 609.5593])
    assert not np.any(info.d) and np.array_equal(np.array(info.r).reshape(3, 3), np.eye(3))
    assert (info.width, info.height, info.header.frame_id) == (1242, 375, "camera_color_left")
    stamp, img = by_topic["/kitti/camera_color_left/image_raw"][1]
    assert stamp == cdr.stamp_ns(img.header.stamp) == rec.frames[1].stamp_ns and img.encoding == "rgb8"
    expected = cv2.cvtColor(cv2.imread(str(rec.frames[1].images[0])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(sensor_data.image_to_rgb(img), expected)
    cloud = by_topic["/kitti/velo/pointcloud"][2][1]
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity"] and cloud.header.frame_id == "velo_link"
    np.testing.assert_array_equal(
        np.frombuffer(cloud.data, "<f4").reshape(-1, 4), read_velodyne(rec.frames[2].velodyne)
    )
    clock = [cdr.stamp_ns(m.clock) for _, m in by_topic["/clock"]]
    assert clock == [f.stamp_ns for f in rec.frames[:3]]


@needs_kitti
def test_kitti360_bag_in_sqlite3_skips_tf_of_the_unposed_frame(tmp_path):
    rec = shared_sample.kitti360_sample(KITTI_SAMPLE)
    counts = write_recording_bag(
        rec, tmp_path / "bag", KITTI360, "sqlite3", max_frames=3, velodyne=False, progress=False
    )
    assert list((tmp_path / "bag").glob("*.db3"))
    assert counts["/kitti360/cam_00/image_rect"] == counts["/kitti360/cam_01/camera_info"] == 3
    assert counts["/tf"] == 2 and "/kitti360/velodyne/points" not in counts  # frame 100 has no pose
    msgs, _ = read_bag(tmp_path / "bag")
    buf = tf_buffer(msgs)
    f = rec.frames[2]  # the buffer keeps the last seconds; the sample's frames are seconds apart
    np.testing.assert_allclose(buf.lookup("world", "kitti360_cam_01", f.stamp_ns), f.T_world_cam(1), atol=1e-6)
    right = next(m for t, _, m in msgs if t == "/kitti360/cam_01/camera_info")
    assert right.p[3] == pytest.approx(-328.318735) and right.p[0] == pytest.approx(552.554261)


def test_odometry_bag_has_mono_and_colour_images(tmp_path, capsys):
    seq, _ = write_odometry(tmp_path / "data")
    assert main(["kitti2bag", "odometry", str(seq), str(tmp_path / "bag"), "--frames", "2", "--no-clock"]) == 0
    printed = capsys.readouterr().out
    assert "/kitti/camera_gray_right/image_raw" in printed and "/clock" not in printed
    msgs, _ = read_bag(tmp_path / "bag")
    images = {t: m for t, _, m in msgs if t.endswith("image_raw")}
    assert images["/kitti/camera_gray_left/image_raw"].encoding == "mono8"
    assert images["/kitti/camera_color_left/image_raw"].encoding == "rgb8"
    # the grey frame of index 1, camera 0 was written with value 10
    assert set(np.asarray(images["/kitti/camera_gray_left/image_raw"].data).tolist()) == {10}
    rec = load_odometry_sequence(seq)
    buf = tf_buffer(msgs)
    np.testing.assert_allclose(
        buf.lookup("world", "camera_gray_right", rec.frames[1].stamp_ns), rec.frames[1].T_world_cam(1), atol=1e-12
    )
    # a second conversion into the same folder is refused with the reason
    assert main(["kitti2bag", "odometry", str(seq), str(tmp_path / "bag")]) == EXIT_USER
    assert "exists" in capsys.readouterr().err


def test_an_image_of_another_size_than_calibrated_is_named(tmp_path, capsys):
    seq, _ = write_odometry(tmp_path / "data")
    cv2.imwrite(str(seq / "image_2" / "000001.png"), np.zeros((17, 32, 3), np.uint8))
    assert main(["kitti2bag", "odometry", str(seq), str(tmp_path / "bag"), "--cameras", "image_2"]) == EXIT_USER
    assert "000001.png is 32x17 but the calibration says 32x16" in capsys.readouterr().err


def test_converter_messages_decode_with_rclpy(rng):
    rclpy_serialization = pytest.importorskip("rclpy.serialization")
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from kdbts_ros.data.bags import CameraStream, camera_messages
    from kdbts_ros.data.kitti_bag import clock_message, velodyne_cloud

    pts = rng.normal(size=(7, 4)).astype(np.float32)
    cloud = rclpy_serialization.deserialize_message(cdr.serialize(velodyne_cloud(pts, 5, "velo_link")), PointCloud2)
    assert (cloud.width, cloud.point_step, cloud.header.frame_id) == (7, 16, "velo_link")
    np.testing.assert_array_equal(np.frombuffer(bytes(cloud.data), "<f4").reshape(7, 4), pts)
    _, topic, _, data = clock_message(3_000_000_007)
    clock = rclpy_serialization.deserialize_message(data, Clock)
    assert topic == "/clock" and (clock.clock.sec, clock.clock.nanosec) == (3, 7)
    K = np.array([[20.0, 0, 4], [0, 20.0, 3], [0, 0, 1]])
    stream = CameraStream("camera_gray_right", np.eye(4), K, "/img", "/info", projection_tx=-10.8)
    mono = rng.integers(0, 255, (6, 8), dtype=np.uint8)
    (_, _, _, info_bytes), (_, _, _, image_bytes) = camera_messages(stream, 9, mono)
    info = rclpy_serialization.deserialize_message(info_bytes, CameraInfo)
    np.testing.assert_allclose(np.array(info.p).reshape(3, 4), np.c_[K, [-10.8, 0, 0]])
    image = rclpy_serialization.deserialize_message(image_bytes, Image)
    assert (image.encoding, image.step) == ("mono8", 8)
    np.testing.assert_array_equal(np.frombuffer(bytes(image.data), np.uint8).reshape(6, 8), mono)
