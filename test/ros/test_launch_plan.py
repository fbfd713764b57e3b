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
    written = plan.write_rviz_config(TEMPLATE, plan.node_plan(CONFIG / f"{preset}.yaml"), CONFIG / "x.yaml", tmp_path)
    rviz = yaml.safe_load(written.read_text())["Visualization Manager"]
    assert rviz["Global Options"]["Fixed Frame"] == cfg.fixed_frame
    topics = {d["Name"]: d["Topic"]["Value"] for d in rviz["Displays"] if "Topic" in d}
    # RViz needs them fully qualified: a node without a namespace takes relative names in the root one
    t = cfg.topics.resolved()
    assert topics["Camera"] == topics["Camera with overlays"] == t.images[0]
    assert {topics["Occupancy (bird's-eye)"], topics["Occupied voxels"], topics["Depth"]} == {
        t.occupancy,
        t.points,
        t.depth,
    }
    assert all(v.startswith("/") for v in topics.values())
    # everything else is the template's
    template = yaml.safe_load(TEMPLATE.read_text())
    assert [d["Class"] for d in rviz["Displays"]] == [d["Class"] for d in template["Visualization Manager"]["Displays"]]


def _rviz_topics(node: plan.NodePlan, tmp_path: Path) -> dict[str, str]:
    written = plan.write_rviz_config(TEMPLATE, node, tmp_path / "p.yaml", tmp_path)
    rviz = yaml.safe_load(written.read_text())["Visualization Manager"]
    return {d["Name"]: d["Topic"]["Value"] for d in rviz["Displays"] if "Topic" in d}


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
    default = TopicsConfig().resolved()
    # the renamed output and camera in their displays, the others on their defaults
    assert _rviz_topics(plan.node_plan(own), tmp_path) == {
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
        plan.node_plan(own)


def test_namespace_name_and_remappings_place_the_nodes_topics(tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text(
        "/**:\n  ros__parameters:\n    fixed_frame: map\n"
        "/front/cam_a:\n  ros__parameters:\n    topics:\n      points: ~/cloud\n"
        "/rear/cam_a:\n  ros__parameters:\n    fixed_frame: odom\n"
    )
    node = plan.node_plan(own, "front", "cam_a", "camera/image_raw:=/drivers/cam0/image, kdbts/depth/image:=depth")
    assert (node.namespace, node.fully_qualified_name) == ("/front", "/front/cam_a")
    assert node.remappings == (("camera/image_raw", "/drivers/cam0/image"), ("kdbts/depth/image", "depth"))
    assert node.config.fixed_frame == "map"  # /** applies; /rear/cam_a does not
    assert _rviz_topics(node, tmp_path) == {
        "Occupancy (bird's-eye)": "/front/kdbts/occupancy",  # relative: under the namespace
        "Occupied voxels": "/front/cam_a/cloud",  # private: under the node, from its own section
        "Depth": "/front/depth",  # remapped, the target resolved in the namespace too
        "Camera": "/drivers/cam0/image",
        "Camera with overlays": "/drivers/cam0/image",
        "World map": "/front/kdbts/map",
        "World map voxels": "/front/kdbts/map_points",
    }
    assert plan.node_plan(own, "/rear/", "cam_a").config.fixed_frame == "odom"
    for args, said in (
        (("front/", "cam a"), "name:=cam a is not"),
        (("2front",), "namespace:=2front is not"),
        (("front", "kdbts_node", "camera/image_raw"), "'camera/image_raw' is not from:=to"),
    ):
        with pytest.raises(plan.LaunchError, match=said):
            plan.node_plan(own, *args)


def test_two_cameras_get_a_node_each_with_its_own_topics_and_parameters(tmp_path):
    front, rear = plan.camera_nodes(CONFIG / "two_cameras.yaml", "front,rear")
    assert (front.fully_qualified_name, rear.fully_qualified_name) == ("/front/kdbts_node", "/rear/kdbts_node")
    assert (front.config.topics.images, rear.config.topics.images) == (
        ["/front/camera/image_raw"],
        ["/rear/camera/image_raw"],
    )
    assert (front.config.topics.occupancy, rear.config.topics.occupancy) == (
        "/front/kdbts/occupancy",
        "/rear/kdbts/occupancy",
    )
    # the shared section for both, each its own after it
    assert front.config.fixed_frame == rear.config.fixed_frame == "odom"
    assert (front.config.map.enabled, rear.config.map.enabled) == (True, False)
    assert (front.config.grid.resolution, rear.config.grid.resolution) == (NodeConfig().grid.resolution, 0.4)
    # two nodes on one camera, or one namespace twice, are refused before anything starts
    same = tmp_path / "same.yaml"
    same.write_text(
        "/**:\n  ros__parameters:\n    topics:\n      images: [/cam/image]\n      camera_infos: [/cam/info]\n"
    )
    with pytest.raises(plan.LaunchError, match="would both use /cam/image"):
        plan.camera_nodes(same, "front,rear")
    with pytest.raises(plan.LaunchError, match="names /front twice"):
        plan.camera_nodes(CONFIG / "two_cameras.yaml", "front,/front")
    with pytest.raises(plan.LaunchError, match="fewer than two"):
        plan.camera_nodes(CONFIG / "two_cameras.yaml", "front")


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
