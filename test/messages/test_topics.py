"""The one table of output topics (messages.topics.OUTPUTS) against the settings it names."""

from dataclasses import fields

import pytest

from kdbts_ros.core.settings import iter_params
from kdbts_ros.messages.topics import OUTPUTS, TopicsConfig, output_topics, qualified, resolver
from kdbts_ros.ros.config import NodeConfig, PublishConfig


def test_one_table_of_outputs_names_each_output_setting_and_its_switch():
    outputs = {f.name for f in fields(TopicsConfig)} - {
        "images",
        "camera_infos",
        "image_geometry",
        "camera_frame",
        "mono16_bits",
    }  # inputs
    assert {o.key for o in OUTPUTS} == outputs and len(OUTPUTS) == len(outputs)
    node = NodeConfig()
    switches = {s.name: s for s in iter_params(node) if s.name in {o.switch for o in OUTPUTS}}
    assert set(switches) == {o.switch for o in OUTPUTS} and all(s.type is bool for s in switches.values())
    # every publish toggle but the QoS setting switches an output
    toggles = {f"publish.{f.name}" for f in fields(PublishConfig)} - {"publish.reliable", "publish.occupancy_latched"}
    assert toggles <= set(switches)


def test_default_topics_are_relative_and_the_outputs_grouped_under_kdbts():
    t = TopicsConfig()
    # relative: a node in /front reads /front/camera/... and publishes /front/kdbts/...; the outputs keep a
    # prefix of their own, so that map and depth/image do not meet a map_server's or a depth camera's there
    assert all(not o.topic(t).startswith(("/", "~")) and o.topic(t).startswith("kdbts/") for o in OUTPUTS)
    assert (t.images, t.camera_infos) == (["camera/image_raw"], ["camera/camera_info"])
    # without a namespace (the offline tools) they are the names the node always had there
    root = t.resolved()
    assert root.occupancy == "/kdbts/occupancy" and root.depth_info == "/kdbts/depth/camera_info"
    assert (root.images, root.camera_infos) == (["/camera/image_raw"], ["/camera/camera_info"])
    front = t.resolved(resolver("/front"))
    assert output_topics(front) == {"/front/" + o.topic(t) for o in OUTPUTS} | {"/diagnostics"}
    assert front.resolved() == front  # fully qualified names stay


def test_names_resolve_as_rcl_expands_and_remaps_them():
    assert qualified("kdbts/map") == "/kdbts/map" and qualified("/tf", "/front") == "/tf"
    assert qualified("kdbts/map", "/front/") == "/front/kdbts/map"
    assert qualified("~/cloud", "/front", "cam") == "/front/cam/cloud" and qualified("~/cloud") == "/kdbts_node/cloud"
    resolve = resolver("/front", "cam", [("/front/camera/image_raw", "/drivers/image"), ("kdbts/map", "map")])
    # a rule matches the name after expansion, whichever way either side is written
    assert resolve("camera/image_raw") == "/drivers/image" and resolve("/front/kdbts/map") == "/front/map"
    assert resolve("kdbts/points") == "/front/kdbts/points"


@pytest.mark.parametrize("bad", ["", "kdbts//map", "kdbts/map/", "2d/map", "kdbts/map points", "~kdbts"])
def test_a_name_ros_would_refuse_is_said_at_start_up(bad):
    t = TopicsConfig(map=bad)
    with pytest.raises(ValueError, match=r"topics.map: .* is not a ROS 2 topic name"):
        t.check()
    TopicsConfig(map="~/map", occupancy="/grid").check()
