"""The one table of output topics (messages.topics.OUTPUTS) against the settings it names."""

from dataclasses import fields

from kdbts_ros.core.settings import iter_params
from kdbts_ros.messages.topics import OUTPUTS, TopicsConfig
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
    toggles = {f"publish.{f.name}" for f in fields(PublishConfig)} - {"publish.reliable"}
    assert toggles <= set(switches)
