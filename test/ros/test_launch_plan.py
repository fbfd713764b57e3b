"""What the launch file starts, decided before anything starts (kdbts_ros.ros.launch_plan; no launch stack needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from kdbts_ros.core.settings import load_config
from kdbts_ros.data.bags import BagWriter
from kdbts_ros.data.kitti_bag import clock_message
from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.messages.topics import TopicsConfig
from kdbts_ros.ros import launch_plan as plan
from kdbts_ros.ros.config import NodeConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
TEMPLATE = ROOT / "rviz/kdbts.rviz"


def _bag(path: Path, clock: bool, storage: str = "mcap") -> str:
    stamp = 10**18
    with BagWriter(path, storage) as bag:
        if clock:
            _, topic, msgtype, data = clock_message(stamp)
            bag.write(topic, msgtype, stamp, data)
        bag.write(
            "/tf",
            "tf2_msgs/msg/TFMessage",
            stamp,
            cdr.serialize(sensor_data.tf_message([("world", "base_link", stamp, np.eye(4))])),
        )
    return str(path)


def test_a_bag_with_its_own_clock_plays_without_a_second_one(tmp_path):
    assert plan.bag_play_command(_bag(tmp_path / "k", clock=True)) == ["ros2", "bag", "play", str(tmp_path / "k")]
    assert plan.bag_play_command(_bag(tmp_path / "o", clock=False))[-1] == "--clock"
    with pytest.raises(plan.LaunchError, match="cannot be read"):
        plan.bag_play_command(str(tmp_path / "missing"))


def test_config_is_a_file_or_a_preset_by_name(tmp_path):
    assert plan.resolve_config("kitti_gray", CONFIG) == CONFIG / "kitti_gray.yaml"
    assert plan.resolve_config("kitti360.yaml", CONFIG) == CONFIG / "kitti360.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("kdbts_node:\n  ros__parameters:\n    fixed_frame: map\n")
    assert plan.resolve_config(str(own), CONFIG) == own
    with pytest.raises(plan.LaunchError) as exc:
        plan.resolve_config("kitti", CONFIG)
    assert "kitti_gray" in str(exc.value) and "train_" not in str(exc.value)


@pytest.mark.parametrize("preset", ["default", "kitti_raw", "kitti_gray", "kitti360"])
def test_rviz_opens_on_the_presets_fixed_frame_and_camera(tmp_path, preset):
    cfg = load_config(NodeConfig, CONFIG / f"{preset}.yaml")
    written = plan.write_rviz_config(TEMPLATE, CONFIG / f"{preset}.yaml", tmp_path)
    rviz = yaml.safe_load(written.read_text())["Visualization Manager"]
    assert rviz["Global Options"]["Fixed Frame"] == cfg.fixed_frame
    topics = {d["Name"]: d["Topic"]["Value"] for d in rviz["Displays"] if "Topic" in d}
    assert topics["Camera"] == topics["Camera with overlays"] == cfg.topics.images[0]
    assert {topics["Occupancy (bird's-eye)"], topics["Occupied voxels"], topics["Depth"]} == {
        cfg.topics.occupancy,
        cfg.topics.points,
        cfg.topics.depth,
    }
    # everything else is the template's
    template = yaml.safe_load(TEMPLATE.read_text())
    assert [d["Class"] for d in rviz["Displays"]] == [d["Class"] for d in template["Visualization Manager"]["Displays"]]


def test_rviz_follows_renamed_outputs_and_a_bad_config_is_refused(tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text(
        yaml.safe_dump(
            {
                "/**": {
                    "ros__parameters": {
                        "fixed_frame": "map",
                        "topics": {
                            "occupancy": "/grid",
                            "images": ["/cam/image"],
                            "camera_infos": ["/cam/camera_info"],
                        },
                    }
                }
            }
        )
    )
    rviz = yaml.safe_load(plan.write_rviz_config(TEMPLATE, own, tmp_path).read_text())["Visualization Manager"]
    topics = {d["Name"]: d["Topic"]["Value"] for d in rviz["Displays"] if "Topic" in d}
    default = TopicsConfig()
    # the renamed output and camera in their displays, the others on their defaults
    assert topics == {
        "Occupancy (bird's-eye)": "/grid",
        "Occupied voxels": default.points,
        "Depth": default.depth,
        "Camera": "/cam/image",
        "Camera with overlays": "/cam/image",
        "World map": default.map,
        "World map voxels": default.map_points,
    }
    own.write_text("kdbts_node:\n  ros__parameters:\n    window_size: 0\n")
    with pytest.raises(plan.LaunchError, match="window_size"):
        plan.write_rviz_config(TEMPLATE, own, tmp_path)


def _prefix(root: Path, packages: dict[str, str | None]) -> str:
    """An ament prefix registering ``packages``, each with an executable lib/<pkg>/<exe> if given."""
    index = root / "share/ament_index/resource_index/packages"
    index.mkdir(parents=True)
    for package, executable in packages.items():
        (index / package).touch()
        if executable:
            exe = root / "lib" / package / executable
            exe.parent.mkdir(parents=True)
            exe.write_text("#!/bin/sh\n")
            exe.chmod(0o755)
    return str(root)


def test_missing_rviz2_or_ros2_bag_is_said_before_anything_starts(tmp_path, monkeypatch):
    bag = _bag(tmp_path / "bag", clock=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    monkeypatch.setenv("AMENT_PREFIX_PATH", _prefix(tmp_path / "bare", {"rclpy": None}))
    with pytest.raises(plan.LaunchError, match="rviz2 is not installed"):
        plan.require_rviz()
    with pytest.raises(plan.LaunchError, match="needs `ros2 bag`"):
        plan.require_bag_player(bag)
    ros2 = bin_dir / "ros2"
    ros2.write_text("#!/bin/sh\n")
    ros2.chmod(0o755)
    monkeypatch.setenv("AMENT_PREFIX_PATH", _prefix(tmp_path / "cli", {"ros2bag": None, "rviz2": None}))
    with pytest.raises(plan.LaunchError, match="rviz2 is not installed"):  # registered, but no executable
        plan.require_rviz()
    with pytest.raises(plan.LaunchError, match="needs rosbag2_storage_mcap"):
        plan.require_bag_player(bag)
    monkeypatch.setenv(
        "AMENT_PREFIX_PATH",
        _prefix(tmp_path / "full", {"ros2bag": None, "rosbag2_storage_mcap": None, "rviz2": "rviz2"}),
    )
    plan.require_rviz()
    plan.require_bag_player(bag)
    with pytest.raises(plan.LaunchError, match="needs rosbag2_storage_sqlite3"):
        plan.require_bag_player(_bag(tmp_path / "db", clock=False, storage="sqlite3"))
    # a ROS 1 bag (kitti2bag's): ros2 bag play cannot read it, whatever is installed
    with pytest.raises(plan.LaunchError, match=r"ROS 1 bag.*rosbags-convert.*kdbts replay"):
        plan.require_bag_player(str(tmp_path / "kitti_2011_09_26_drive_0052_synced.bag"))
