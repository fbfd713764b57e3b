"""``kdbts kitti2bag`` writing the kitti2bag tool's layouts, and ``kdbts replay`` reading them as people have them."""

from __future__ import annotations

import pytest
from conftest import KITTI_SAMPLE

from kdbts_ros.commands.cli import main
from kdbts_ros.core.errors import EXIT_USER
from kdbts_ros.messages.bag_reader import open_bag

pytestmark = pytest.mark.integration

SEQ = KITTI_SAMPLE.parent / "kitti_odometry" / "sequences" / "01"
needs_odometry = pytest.mark.skipif(not SEQ.is_dir(), reason="shared KITTI odometry sample not present")


@pytest.fixture
def small_yaml(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(
        "model: {checkpoint: random, backbone: resnet18, image_height: 64, image_width: 192}\n"
        "grid: {resolution: 0.5}\nrender: {depth_scale: 0.5, samples: 32}\n"
    )
    return path


@needs_odometry
def test_kitti2bag_writes_a_ros1_odometry_bag_that_replay_reads_with_its_layouts_settings(tmp_path, capsys, small_yaml):
    bag = tmp_path / "kitti_data_odometry_gray_sequence_01.bag"
    assert main(["kitti2bag", "odom_gray", str(SEQ), str(bag), "--frames", "2"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {bag} (rosbag1)" in out and "2 x /kitti/camera_gray_left/image_rect" in out
    assert bag.read_bytes().startswith(b"#ROSBAG V2.0\n")
    assert main(["replay", str(bag), str(tmp_path / "out"), "--config", str(small_yaml)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("kitti2bag odom_gray bag: camera /kitti/camera_gray_left/image_rect; images' frame")
    assert "frames processed: 2" in out and "dropped: none" in out
    with open_bag(tmp_path / "out") as replayed:
        assert "/kdbts/depth/image" in replayed.topics


@needs_odometry
def test_replays_camera_frame_option_overrides_the_layouts(tmp_path, capsys, small_yaml):
    bag = tmp_path / "g.bag"
    assert main(["kitti2bag", "odom_gray", str(SEQ), str(bag), "--frames", "2"]) == 0
    argv = ["replay", str(bag), str(tmp_path / "out"), "--config", str(small_yaml), "--camera-frame", "camera_right"]
    assert main(argv) == 1  # no such frame in the bag's TF: nothing processed, said in one line
    captured = capsys.readouterr()
    assert "taken as the TF's camera_right" in captured.out and "tf_unknown_frame 1" in captured.out
    assert captured.err.strip().splitlines()[-1].endswith("no frame was processed (see the drops above)")


@needs_odometry
def test_odom_color_of_a_grey_sequence_needs_the_option_and_says_so(tmp_path, capsys):
    assert main(["kitti2bag", "odom_color", str(SEQ), str(tmp_path / "c.bag"), "--frames", "1"]) == EXIT_USER
    assert "--colour-from-grey" in capsys.readouterr().err
    argv = ["kitti2bag", "odom_color", str(SEQ), str(tmp_path / "c.bag"), "--frames", "1", "--colour-from-grey"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "odom_color from grey frames" in out and "1 x /kitti/camera_color_left/image_rect" in out
