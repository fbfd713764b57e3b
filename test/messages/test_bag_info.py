"""What a bag holds, read before anything runs: its cameras, its clock, the roots of its TF."""

from __future__ import annotations

import numpy as np

from kdbts_ros.data.bags import BagWriter
from kdbts_ros.data.kitti_bag import clock_message
from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.messages.bag_info import bag_storage, bag_topics, camera_topics, has_clock, info_beside, tf_frames

IMAGE, COMPRESSED, INFO = cdr.IMAGE, cdr.COMPRESSED_IMAGE, "sensor_msgs/msg/CameraInfo"


def test_cameras_are_image_topics_with_a_camera_info_beside_them_in_natural_order():
    topics = {
        "/rig/cam10/image": IMAGE,
        "/rig/cam10/camera_info": INFO,
        "/rig/cam2/image_rect": IMAGE,
        "/rig/cam2/camera_info": INFO,
        "/rig/cam2/image_rect/compressed": COMPRESSED,  # the same camera compressed: taken raw
        "/front/image_raw/compressed": COMPRESSED,
        "/front/camera_info": INFO,  # only compressed
        "/debug/image": IMAGE,  # no camera_info beside it
        "/odd/image": COMPRESSED,
        "/odd/camera_info": INFO,  # compressed, but not on .../compressed
        "/lidar/camera_info": INFO,
        "/lidar/points": "sensor_msgs/msg/PointCloud2",
    }
    assert camera_topics(topics) == [
        ("/front/image_raw/compressed", "/front/camera_info"),
        ("/rig/cam2/image_rect", "/rig/cam2/camera_info"),
        ("/rig/cam10/image", "/rig/cam10/camera_info"),
    ]
    assert info_beside("/front/image_raw/compressed") == "/front/camera_info"
    assert camera_topics({"/camera_info": INFO, "/image": IMAGE}) == [("/image", "/camera_info")]


def _write(path, messages, storage="mcap"):
    with BagWriter(path, storage) as bag:
        for stamp, topic, msgtype, data in messages:
            bag.write(topic, msgtype, stamp, data)


def _tf(topic, parent, child, stamp=10**18):
    return (
        stamp,
        topic,
        "tf2_msgs/msg/TFMessage",
        cdr.serialize(sensor_data.tf_message([(parent, child, stamp, np.eye(4))])),
    )


def test_topics_storage_clock_and_tf_roots_of_written_bags(tmp_path):
    _write(
        tmp_path / "a",
        [
            clock_message(10**18),
            _tf("/tf_static", "rig", "cam"),
            _tf("/tf_static", "rig", "imu"),
            _tf("/tf", "map", "rig"),
            _tf("/tf_static", "sensor_box", "lidar"),
        ],
        "sqlite3",
    )
    topics = bag_topics(tmp_path / "a")
    assert topics == {
        "/clock": "rosgraph_msgs/msg/Clock",
        "/tf_static": "tf2_msgs/msg/TFMessage",
        "/tf": "tf2_msgs/msg/TFMessage",
    }
    assert has_clock(topics) and bag_storage(tmp_path / "a") == "sqlite3"
    frames, roots = tf_frames(tmp_path / "a")
    assert frames == {"map", "rig", "cam", "imu", "sensor_box", "lidar"}
    assert roots == ["map", "sensor_box"]  # the root of moving transforms first
    _write(tmp_path / "b", [_tf("/tf", "odom", "base_link")])
    assert not has_clock(bag_topics(tmp_path / "b")) and bag_storage(tmp_path / "b") == "mcap"
    (mcap,) = (tmp_path / "b").glob("*.mcap")
    assert bag_storage(mcap) == "mcap" and bag_topics(mcap) == {"/tf": "tf2_msgs/msg/TFMessage"}
