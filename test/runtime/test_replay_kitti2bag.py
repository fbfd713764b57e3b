"""KITTI bags as people have them: the kitti2bag tool's three layouts, ROS 1 and converted, through the replay.

The bags are written from the shared KITTI data with the project's writer (checked against
kitti2bag's source in test/data/test_kitti2bag_layouts.py) and replayed without a hand-written
configuration: every frame processed, none dropped for want of a pose, the world map upright.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import KITTI_SAMPLE, read_bag, small_config

from kdbts_ros.data import shared_sample
from kdbts_ros.data.kitti2bag_layouts import write_kitti2bag
from kdbts_ros.data.kitti_odometry import load_odometry_sequence
from kdbts_ros.runtime.replay import replay

pytestmark = pytest.mark.integration

SEQ = KITTI_SAMPLE.parent / "kitti_odometry" / "sequences" / "01"
RAW_CALIB = KITTI_SAMPLE / shared_sample.RAW_CALIB
needs_data = pytest.mark.skipif(
    not (SEQ.is_dir() and RAW_CALIB.is_dir()), reason="shared KITTI raw / odometry samples not present"
)
N = 3
# what replay must work out for itself: the output camera, its TF frame, the fixed frame, and which way is up
LAYOUTS = {
    "raw_synced": ("/kitti/camera_color_left/image_raw", "", "+z"),  # world: ORB-SLAM's base_link of frame 0
    "odom_gray": ("/kitti/camera_gray_left/image_rect", "camera_left", "-y"),  # world: camera 0, y down
    "odom_color": ("/kitti/camera_color_left/image_rect", "camera_left", "-y"),
}


def _bag(layout: str, out: Path, storage: str = "rosbag1") -> Path:
    if layout == "raw_synced":
        rec = shared_sample.raw_sample(KITTI_SAMPLE)
        write_kitti2bag(rec, layout, out, RAW_CALIB, storage, N, progress=False)
    else:
        rec = load_odometry_sequence(SEQ, cameras=["image_0", "image_1"])
        write_kitti2bag(rec, layout, out, SEQ / "calib.txt", storage, N, colour_from_grey=True, progress=False)
    return out


def _last_diagnostics(bag: Path) -> dict[str, str]:
    msgs, _ = read_bag(bag)
    diag = [m for topic, _, m in msgs if topic == "/diagnostics"][-1]
    return {kv.key: kv.value for kv in diag.status[0].values}


@needs_data
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_kitti2bag_layout_replays_without_a_config(tmp_path, layout):
    image, camera_frame, up = LAYOUTS[layout]
    lines: list[str] = []
    # base_footprint as the KITTI presets name it: kitti2bag's bags have none
    cfg = small_config(**{"map.enabled": True, "map.decay_per_s": 0.0, "planner.frame": "base_footprint"})
    result = replay(cfg, _bag(layout, tmp_path / "in.bag"), tmp_path / "out", progress=False, report=lines.append)
    assert result.processed == N and not result.drops, (result.drops, lines)
    (line,) = lines
    assert line.startswith(f"kitti2bag {layout} bag: camera {image}") and "fixed frame world" in line
    assert (f"taken as the TF's {camera_frame}" in line) == bool(camera_frame)
    diag = _last_diagnostics(tmp_path / "out")
    assert diag["map_up_axis"] == up and diag["map_tilted_frames"] == "0" and int(diag["map_frames"]) == N
    msgs, _ = read_bag(tmp_path / "out")
    depth = [m for topic, _, m in msgs if topic == "/kdbts/depth/image"]
    assert len(depth) == N and depth[0].header.frame_id == (camera_frame or "camera_color_left")
    # the planner grid: on raw_synced's base_link, which kitti2bag puts on the road (imu_link 0.93 m above it);
    # the odometry layouts have no vehicle frame: world turned z up, the road 1.65 m below camera 0's start
    grids = [m for topic, _, m in msgs if topic == "/kdbts/occupancy"]
    assert len(grids) == N
    origin, z_min = grids[-1].info.origin.position, cfg.planner.z_min
    if layout == "raw_synced":
        assert "planner grid in base_link (on the road)" in line
        assert grids[-1].header.frame_id == "base_link" and origin.z == pytest.approx(z_min)
    else:
        assert "planner grid in world turned z up (1.65 m above the road)" in line
        assert grids[-1].header.frame_id == "world" and -origin.y == pytest.approx(z_min - 1.65)  # world's up: -y


@needs_data
def test_a_bag_converted_by_rosbags_convert_replays_as_the_ros1_one(tmp_path):
    ros1 = _bag("odom_gray", tmp_path / "in.bag")
    converted = tmp_path / "converted"
    subprocess.run(
        [sys.executable, "-m", "rosbags.convert", "--src", str(ros1), "--dst", str(converted)],
        check=True,
        capture_output=True,
    )
    first = replay(small_config(), ros1, tmp_path / "a", progress=False)
    second = replay(small_config(), converted, tmp_path / "b", progress=False)
    assert first.processed == second.processed == N and not first.drops and not second.drops
    assert first.choices == second.choices


@needs_data
def test_without_the_camera_frame_the_drop_names_the_frames_tf_has(tmp_path, caplog):
    cfg = small_config(
        **{
            "topics.images": ["/kitti/camera_gray_left/image_rect"],
            "topics.camera_infos": ["/kitti/camera_gray_left/camera_info"],
            "fixed_frame": "world",
        }
    )
    with caplog.at_level(logging.WARNING, logger="kdbts_ros"):
        result = replay(
            cfg, _bag("odom_gray", tmp_path / "in.bag"), tmp_path / "out", progress=False, pick_camera_frame=False
        )
    assert result.processed == 0 and result.drops == {"superseded": N - 1, "tf_unknown_frame": 1}
    (message,) = [r.getMessage() for r in caplog.records if "tf_unknown_frame" in r.getMessage()]
    assert "'camera_gray_left' does not exist in TF (its frames: camera_left, world)" in message
    assert "set topics.camera_frame" in message
