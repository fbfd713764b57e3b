"""ROS 1 bags read directly: messages reach the runner as the CDR bytes of their ROS 2 types; bad ones are one line.

The bags here are written with rosbags' ROS 1 writer and ROS 1 Noetic's message definitions, as
``rosbag record`` (and the kitti2bag tool) write them: ROS 1 type names, std_msgs/Header with
``seq``, CameraInfo's upper-case ``D K R P``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag1 import Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.messages.bag_info import bag_topics, camera_topics, tf_frames
from kdbts_ros.messages.bag_reader import BagError, open_bag

NOETIC = get_typestore(Stores.ROS1_NOETIC)
NOETIC.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage"))
STAMP = 1_317_046_800_123_456_789


def _noetic_bag(path: Path, seq: int = 41) -> dict[str, object]:
    """A ROS 1 bag of Noetic messages made field by field (not through the CDR path under test)."""
    t = NOETIC.types
    time = t["builtin_interfaces/msg/Time"](sec=STAMP // 10**9, nanosec=STAMP % 10**9)

    def header(frame: str):
        return t["std_msgs/msg/Header"](seq=seq, stamp=time, frame_id=frame)

    K = np.array([700.0, 0, 600, 0, 710, 180, 0, 0, 1])
    P = np.array([721.5, 0, 609.6, 44.9, 0, 721.5, 172.9, 0.2, 0, 0, 1, 0.003])
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    info = t["sensor_msgs/msg/CameraInfo"](
        header=header("camera_color_left"),
        height=375,
        width=1242,
        distortion_model="plumb_bob",
        D=np.array([-0.37, 0.2, 0.001, 0.0006, -0.07]),
        K=K,
        R=np.eye(3).reshape(-1),
        P=P,
        binning_x=0,
        binning_y=0,
        roi=roi,
    )
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8)
    image = t["sensor_msgs/msg/Image"](
        header=header("camera_color_left"), height=4, width=6, encoding="bgr8", is_bigendian=0, step=18, data=pixels
    )
    q = t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)
    v = t["geometry_msgs/msg/Vector3"](x=1.5, y=-2.0, z=0.25)
    tf = t["tf2_msgs/msg/TFMessage"](
        transforms=[
            t["geometry_msgs/msg/TransformStamped"](
                header=header("world"),
                child_frame_id="base_link",
                transform=t["geometry_msgs/msg/Transform"](translation=v, rotation=q),
            )
        ]
    )
    msgs = {
        "/kitti/camera_color_left/camera_info": info,
        "/kitti/camera_color_left/image_raw": image,
        "/tf": tf,
    }
    with Writer(path) as w:
        for topic, msg in msgs.items():
            conn = w.add_connection(topic, msg.__msgtype__, typestore=NOETIC)
            w.write(conn, STAMP, NOETIC.serialize_ros1(msg, msg.__msgtype__))
    return msgs


def test_a_ros1_bag_reads_as_the_cdr_of_its_ros2_types(tmp_path):
    path = tmp_path / "kitti.bag"
    written = _noetic_bag(path)
    with open_bag(path) as bag:
        assert bag.cut_short is None and bag.message_count == 3
        assert bag.topics == {
            "/kitti/camera_color_left/camera_info": "sensor_msgs/msg/CameraInfo",
            "/kitti/camera_color_left/image_raw": "sensor_msgs/msg/Image",
            "/tf": "tf2_msgs/msg/TFMessage",
        }
        got = {topic: (stamp, cdr.deserialize(data, msgtype)) for stamp, topic, msgtype, data in bag.messages()}
    info = got["/kitti/camera_color_left/camera_info"][1]
    sent = written["/kitti/camera_color_left/camera_info"]
    assert all(stamp == STAMP for stamp, _ in got.values())
    assert cdr.stamp_ns(info.header.stamp) == STAMP and info.header.frame_id == "camera_color_left"
    assert not hasattr(info.header, "seq")  # ROS 2's Header: the seq is gone, nothing after it shifted
    np.testing.assert_array_equal(info.d, sent.D)
    np.testing.assert_array_equal(info.k, sent.K)
    np.testing.assert_array_equal(info.p, sent.P)
    assert (info.width, info.height, info.distortion_model) == (1242, 375, "plumb_bob")
    image = got["/kitti/camera_color_left/image_raw"][1]
    rgb = sensor_data.decode_image(image, cdr.IMAGE)
    np.testing.assert_array_equal(rgb, np.arange(72, dtype=np.uint8).reshape(4, 6, 3)[..., ::-1])
    ((parent, child, stamp, T, problem),) = sensor_data.tf_transforms(got["/tf"][1])
    assert (parent, child, stamp, problem) == ("world", "base_link", STAMP, None)
    np.testing.assert_allclose(T[:3, 3], [1.5, -2.0, 0.25])


def test_bag_info_sees_the_cameras_and_tf_of_a_ros1_bag(tmp_path):
    path = tmp_path / "kitti.bag"
    _noetic_bag(path)
    topics = bag_topics(path)
    assert camera_topics(topics) == [("/kitti/camera_color_left/image_raw", "/kitti/camera_color_left/camera_info")]
    assert tf_frames(path) == ({"world", "base_link"}, ["world"])


def test_a_ros1_bag_is_known_by_its_magic_whatever_its_name(tmp_path):
    path = tmp_path / "recording.bin"
    _noetic_bag(path)
    with open_bag(path) as bag:
        assert len(list(bag.messages())) == 3


def _cut(src: Path, dest: Path, size: int) -> Path:
    dest.write_bytes(src.read_bytes()[:size])
    return dest


@pytest.mark.parametrize(
    "make,why",
    [
        (lambda good, p: p.write_bytes(b""), "not a ROS 1 bag"),
        (lambda good, p: p.write_bytes(b"not a bag at all\n" * 40), "not a ROS 1 bag"),
        (lambda good, p: _cut(good, p, 13), "not a readable ROS 1 bag"),  # the magic only
        (lambda good, p: _cut(good, p, good.stat().st_size // 2), "not a readable ROS 1 bag"),
    ],
    ids=["empty", "text", "magic only", "cut in half"],
)
def test_a_bad_ros1_bag_is_one_line_naming_it(tmp_path, make, why):
    good = tmp_path / "good.bag"
    _noetic_bag(good)
    bad = tmp_path / "bad.bag"
    make(good, bad)
    with pytest.raises(BagError) as err, open_bag(bad) as bag:
        list(bag.messages())
    text = str(err.value)
    assert text.startswith(f"{bad}: {why}") and "\n" not in text, text


def test_a_ros1_bag_cut_short_says_to_reindex_it(tmp_path):
    good = tmp_path / "good.bag"
    _noetic_bag(good)
    # a recording killed before its index: rosbag's index position in the header is still 0
    data = bytearray(good.read_bytes())
    at = data.index(b"index_pos=") + len(b"index_pos=")
    data[at : at + 8] = bytes(8)
    bad = tmp_path / "killed.bag"
    bad.write_bytes(bytes(data))
    with pytest.raises(BagError, match="rosbag reindex"), open_bag(bad):
        pass
