"""The kitti2bag tool's layouts written from the shared KITTI data, read back with rosbags' ROS 1 reader.

Every expectation is kitti2bag's (tomas789/kitti2bag, ``kitti2bag/kitti2bag.py``) computed here from
the dataset files themselves: topic names, message types and ROS 1 md5 sums, frame ids, the TF tree,
camera_info contents, image encodings and pixels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import KITTI_SAMPLE, calib_numbers, homogeneous
from rosbags.rosbag1 import Reader as Ros1Reader

from kdbts_ros.data import shared_sample
from kdbts_ros.data.bags import ros1_typestore
from kdbts_ros.data.kitti2bag_layouts import write_kitti2bag
from kdbts_ros.data.kitti_odometry import load_odometry_sequence
from kdbts_ros.data.records import DatasetError
from kdbts_ros.messages.bag_reader import open_bag

pytestmark = pytest.mark.integration

ODOMETRY = KITTI_SAMPLE.parent / "kitti_odometry"
SEQ = ODOMETRY / "sequences" / "01"  # both grey cameras, 51 frames
RAW_CALIB = KITTI_SAMPLE / shared_sample.RAW_CALIB
needs_data = pytest.mark.skipif(
    not (SEQ.is_dir() and RAW_CALIB.is_dir()), reason="shared KITTI raw / odometry samples not present"
)
# ROS 1's md5 sums (rosmsg md5), as rosbag record writes them
MD5 = {
    "sensor_msgs/msg/Image": "060021388200f6f0f447d0fcd9c64743",
    "sensor_msgs/msg/CameraInfo": "c9a58c1b0b154e0e6da7578cb991d214",
    "tf2_msgs/msg/TFMessage": "94810edda583a504dfda3829e70d7eec",
    "sensor_msgs/msg/PointCloud2": "1158d486dd51d683ce2f1be655c3c181",
}
N = 2


def ros1_messages(path: Path) -> tuple[dict[str, tuple[str, str]], list[tuple[str, int, object]]]:
    """Topic -> (type, md5) and every (topic, stamp, message) of a ROS 1 bag, decoded as ROS 1 messages."""
    store = ros1_typestore()
    with Ros1Reader(path) as reader:
        conns = {c.topic: (c.msgtype, c.digest) for c in reader.connections}
        msgs = [(c.topic, t, store.deserialize_ros1(raw, c.msgtype)) for c, t, raw in reader.messages()]
    return conns, msgs


def matrix(tf) -> np.ndarray:
    """4x4 of a ROS 1 geometry_msgs/Transform (quaternion x, y, z, w)."""
    from scipy.spatial.transform import Rotation

    r, t = tf.rotation, tf.translation
    return homogeneous(Rotation.from_quat([r.x, r.y, r.z, r.w]).as_matrix(), [t.x, t.y, t.z])


@needs_data
def test_raw_synced_is_kitti2bags_bag_of_the_drive(tmp_path):
    rec = shared_sample.raw_sample(KITTI_SAMPLE)
    counts = write_kitti2bag(rec, "raw_synced", tmp_path / "raw.bag", RAW_CALIB, "rosbag1", N, progress=False)
    conns, msgs = ros1_messages(tmp_path / "raw.bag")
    cam = "/kitti/camera_color_left"
    expected = {
        f"{cam}/image_raw": "sensor_msgs/msg/Image",
        f"{cam}/camera_info": "sensor_msgs/msg/CameraInfo",
        "/tf": "tf2_msgs/msg/TFMessage",
        "/tf_static": "tf2_msgs/msg/TFMessage",
        "/kitti/velo/pointcloud": "sensor_msgs/msg/PointCloud2",
    }
    assert conns == {t: (m, MD5[m]) for t, m in expected.items()}
    assert counts == dict.fromkeys(expected, N)

    cc = RAW_CALIB / "calib_cam_to_cam.txt"
    (_, _, info), (_, _, image) = [(t, s, m) for t, s, m in msgs if t.startswith(cam)][:2][::-1]
    # image then camera_info, each frame; camera_info: the calibration's unrectified K, D, R_rect beside P_rect
    assert info.header.frame_id == image.header.frame_id == "camera_color_left" and info.header.seq == 0
    np.testing.assert_array_equal(info.K, calib_numbers(cc, "K_02"))
    np.testing.assert_array_equal(info.D, calib_numbers(cc, "D_02"))
    np.testing.assert_array_equal(info.R, calib_numbers(cc, "R_rect_02"))
    np.testing.assert_array_equal(info.P, calib_numbers(cc, "P_rect_02"))
    assert info.distortion_model == "plumb_bob" and (info.width, info.height) == (image.width, image.height)
    bgr = cv2.imread(str(rec.frames[0].images[0]), cv2.IMREAD_COLOR)
    assert image.encoding == "bgr8" and image.step == 3 * image.width
    np.testing.assert_array_equal(np.asarray(image.data).reshape(bgr.shape), bgr)

    # the TF tree: world -> base_link -> imu_link (lever arm) -> velo_link and the four rectified cameras
    statics = [m for t, _, m in msgs if t == "/tf_static"]
    assert len(statics) == N  # kitti2bag repeats it at every frame
    edges = {(ts.header.frame_id, ts.child_frame_id): matrix(ts.transform) for ts in statics[0].transforms}
    cameras = ("camera_gray_left", "camera_gray_right", "camera_color_left", "camera_color_right")
    assert set(edges) == {("base_link", "imu_link"), ("imu_link", "velo_link")} | {("imu_link", c) for c in cameras}
    np.testing.assert_allclose(edges["base_link", "imu_link"][:3, 3], [-2.71 / 2 - 0.05, 0.32, 0.93])
    imu, velo = RAW_CALIB / "calib_imu_to_velo.txt", RAW_CALIB / "calib_velo_to_cam.txt"
    T_velo_imu = homogeneous(calib_numbers(imu, "R"), calib_numbers(imu, "T"))
    np.testing.assert_allclose(edges["imu_link", "velo_link"], np.linalg.inv(T_velo_imu), atol=1e-6)
    # pykitti: T_camN_imu = [I | t_N] R_rect_00 T_cam0_velo T_velo_imu, t_N = P_rect_0N[:, 3] / fx
    for n, frame in enumerate(cameras):
        P = calib_numbers(cc, f"P_rect_0{n}").reshape(3, 4)
        shift = homogeneous(np.eye(3), [P[0, 3] / P[0, 0], 0, 0])
        T_cam_imu = shift @ homogeneous(calib_numbers(cc, "R_rect_00"), np.zeros(3))
        T_cam_imu = T_cam_imu @ homogeneous(calib_numbers(velo, "R"), calib_numbers(velo, "T")) @ T_velo_imu
        np.testing.assert_allclose(edges["imu_link", frame], np.linalg.inv(T_cam_imu), atol=1e-4)
    (tf,) = [m for t, _, m in msgs if t == "/tf"][1].transforms
    assert (tf.header.frame_id, tf.child_frame_id) == ("world", "base_link")
    np.testing.assert_allclose(matrix(tf.transform), rec.frames[1].T_world_base, atol=1e-6)
    cloud = next(m for t, _, m in msgs if t == "/kitti/velo/pointcloud")
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "i"] and cloud.header.frame_id == "velo_link"


@needs_data
@pytest.mark.parametrize("layout", ["odom_gray", "odom_color"])
def test_odometry_layouts_are_kitti2bags_bags_of_the_sequence(tmp_path, layout):
    rec = load_odometry_sequence(SEQ, cameras=["image_0", "image_1"])
    out = tmp_path / f"{layout}.bag"
    write_kitti2bag(rec, layout, out, SEQ / "calib.txt", "rosbag1", N, colour_from_grey=True, progress=False)
    conns, msgs = ros1_messages(out)
    sides = ("gray", (0, 1)) if layout == "odom_gray" else ("color", (2, 3))
    names = [f"camera_{sides[0]}_{side}" for side in ("left", "right")]
    expected = {"/tf": "tf2_msgs/msg/TFMessage"}
    for name in names:
        expected |= {f"/kitti/{name}/image_rect": "sensor_msgs/msg/Image"}
        expected |= {f"/kitti/{name}/camera_info": "sensor_msgs/msg/CameraInfo"}
    assert conns == {t: (m, MD5[m]) for t, m in expected.items()}

    # /tf: world -> camera_left, poses/01.txt itself (camera 0 in camera 0 of the first frame), no /tf_static
    poses = np.loadtxt(ODOMETRY / "poses" / "01.txt")[:N].reshape(N, 3, 4)
    tfs = [m.transforms[0] for t, _, m in msgs if t == "/tf"]
    assert [(ts.header.frame_id, ts.child_frame_id) for ts in tfs] == [("world", "camera_left")] * N
    for ts, pose in zip(tfs, poses):
        np.testing.assert_allclose(matrix(ts.transform)[:3], pose, atol=1e-6)
    for name, number, folder in zip(names, sides[1], ("image_0", "image_1")):
        info = next(m for t, _, m in msgs if t == f"/kitti/{name}/camera_info")
        image = next(m for t, _, m in msgs if t == f"/kitti/{name}/image_rect")
        # only P (calib.txt's P0..P3), width and height: K and R zero, D empty, no model
        np.testing.assert_array_equal(info.P, calib_numbers(SEQ / "calib.txt", f"P{number}"))
        assert not np.any(info.K) and not np.any(info.R) and len(info.D) == 0 and info.distortion_model == ""
        assert info.header.frame_id == image.header.frame_id == name
        grey = cv2.imread(str(SEQ / folder / "000000.png"), cv2.IMREAD_GRAYSCALE)
        assert (info.height, info.width) == grey.shape
        if layout == "odom_gray":
            assert image.encoding == "mono8"
            np.testing.assert_array_equal(np.asarray(image.data).reshape(grey.shape), grey)
        else:  # the shared sequences have no colour frames: grey ones as 3 channels
            assert image.encoding == "bgr8"
            np.testing.assert_array_equal(np.asarray(image.data).reshape(*grey.shape, 3), grey[..., None].repeat(3, -1))


@needs_data
def test_ros1_and_ros2_bags_of_a_layout_hold_the_same_messages(tmp_path):
    rec = load_odometry_sequence(SEQ, cameras=["image_0", "image_1"])
    ros1, ros2 = tmp_path / "a.bag", tmp_path / "b"
    write_kitti2bag(rec, "odom_gray", ros1, SEQ / "calib.txt", "rosbag1", N, progress=False)
    write_kitti2bag(rec, "odom_gray", ros2, SEQ / "calib.txt", "mcap", N, progress=False)
    with open_bag(ros1) as a, open_bag(ros2) as b:
        assert a.topics == b.topics
        first, second = sorted(a.messages()), sorted(b.messages())
    assert first == second and len(first) == 5 * N  # /tf, two images, two camera_infos per frame


@needs_data
def test_odom_color_of_a_grey_sequence_asks_for_colour_from_grey(tmp_path):
    rec = load_odometry_sequence(SEQ, cameras=["image_0", "image_1"])
    with pytest.raises(DatasetError, match="--colour-from-grey"):
        write_kitti2bag(rec, "odom_color", tmp_path / "c.bag", SEQ / "calib.txt", "rosbag1", N)
    assert not (tmp_path / "c.bag").exists()
