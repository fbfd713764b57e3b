"""The runner's configuration (runtime.config): offline tools read the node's parameter files."""

from dataclasses import fields
from pathlib import Path

import pytest

from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.settings import ConfigError, get_param, iter_params, load_config
from kdbts_ros.ros.config import NodeConfig
from kdbts_ros.runtime.config import NODE_SETTINGS, RunnerConfig, load_runner_config

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted(p for p in (ROOT / "config").glob("*.yaml") if not p.stem.startswith("train_"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_offline_tools_read_the_nodes_parameter_files_without_its_own_settings(preset):
    node, runner = load_config(NodeConfig, preset), load_runner_config(preset)
    assert type(runner) is RunnerConfig
    assert all(get_param(runner, s.name) == get_param(node, s.name) for s in iter_params(runner))


def test_the_node_settings_offline_tools_pass_by_are_those_the_node_adds():
    added = {f.name for f in fields(NodeConfig)} - {f.name for f in fields(RunnerConfig)}
    assert added == set(NODE_SETTINGS)
    # the frame path's schema holds neither topics nor what only the node reads
    assert not {f.name for f in fields(PipelineConfig)} & (added | {"topics"})


def test_offline_tools_refuse_other_unknown_settings_and_node_settings_given_to_them(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("kdbts_node:\n  ros__parameters:\n    autostart: false\n    publish:\n      depth: false\n")
    assert load_runner_config(f) == RunnerConfig()
    f.write_text("kdbts_node:\n  ros__parameters:\n    autostart: false\n    autostrat: false\n")
    with pytest.raises(ConfigError, match="unknown parameter 'autostrat'"):
        load_runner_config(f)
    with pytest.raises(ConfigError, match="command line: unknown parameter 'autostart'"):
        load_runner_config(overrides={"autostart": False})
