"""The node's parameters (ros.config.NodeConfig): the generated parameter file, each one documented and bounded."""

from pathlib import Path

import pytest

from kdbts_ros.core.settings import iter_params, load_config, set_param, to_yaml
from kdbts_ros.ros.config import NodeConfig

ROOT = Path(__file__).resolve().parents[2]


def test_default_yaml_is_the_generated_parameter_file():
    assert (ROOT / "config/default.yaml").read_text() == to_yaml(NodeConfig())
    assert load_config(NodeConfig, ROOT / "config/default.yaml") == NodeConfig()


def test_every_parameter_is_documented_with_a_range_or_choices_where_numeric():
    cfg = NodeConfig()
    for spec in iter_params(NodeConfig()):
        assert spec.description.strip(), spec.name
        set_param(cfg, spec.name, spec.default, check=False)  # the default is a value the parameter accepts
        if spec.type in (int, float):
            lo, hi = spec.range
            assert lo < hi, spec.name
            # both ends are accepted (alone: cross-field checks off), one step beyond either is refused
            for accepted in (lo, hi):
                set_param(cfg, spec.name, accepted, check=False)
            for refused in (lo - spec.type(1), hi + spec.type(1)):
                with pytest.raises(ValueError, match="outside"):
                    set_param(cfg, spec.name, refused, check=False)
        if spec.choices is not None:
            assert spec.default in spec.choices, spec.name
            for accepted in spec.choices:
                set_param(cfg, spec.name, accepted, check=False)
            with pytest.raises(ValueError, match="not one of"):
                set_param(cfg, spec.name, "no such choice", check=False)
