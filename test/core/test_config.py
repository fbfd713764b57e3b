"""The frame path's schema (core.config) through the parameter engine (core.settings): validation, files."""

import pytest

from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.settings import iter_params, load_config, set_param


def test_invalid_values_are_rejected_with_a_reason_and_leave_the_config_unchanged(tmp_path):
    cfg = PipelineConfig()
    with pytest.raises(ValueError, match="outside"):
        set_param(cfg, "grid.resolution", 0.0)
    with pytest.raises(ValueError, match="not one of"):
        set_param(cfg, "mode", "both")
    with pytest.raises(ValueError, match="expected int"):
        set_param(cfg, "window_size", 2.5)
    with pytest.raises(ValueError, match="below its max"):
        set_param(cfg, "grid.x_min", 20.0)
    assert cfg == PipelineConfig()
    with pytest.raises(ValueError, match="unknown parameter"):
        load_config(PipelineConfig, overrides={"grid.cell": 1})
    f = tmp_path / "p.yaml"
    f.write_text("kdbts_node:\n  ros__parameters:\n    mode: mv\n    grid:\n      resolution: 1\n")
    cfg = load_config(PipelineConfig, f)
    assert cfg.mode == "mv" and cfg.grid.resolution == 1.0 and isinstance(cfg.grid.resolution, float)


def test_random_weight_backbones_are_the_ones_the_network_builds():
    from kdbts_ros.core.model.resnet import BACKBONES

    spec = next(s for s in iter_params(PipelineConfig()) if s.name == "model.backbone")
    assert set(spec.choices) == set(BACKBONES)


def test_a_grid_too_large_to_compute_is_refused_with_its_size():
    cfg = PipelineConfig()
    set_param(cfg, "grid.resolution", 0.05)  # 360 x 400 x 5: fine
    with pytest.raises(ValueError, match="voxels is more than"):
        set_param(cfg, "grid.resolution", 0.01)  # 1800 x 2000 x 5 = 18 M voxels
    assert cfg.grid.resolution == 0.05


def test_an_atomic_set_is_applied_whole_or_not_at_all():
    from kdbts_ros.core.settings import set_params

    cfg = PipelineConfig()
    with pytest.raises(ValueError, match="below its max"):
        set_params(cfg, [("grid.resolution", 1.0), ("grid.x_min", 50.0)])
    assert cfg == PipelineConfig()
    set_params(cfg, [("grid.x_max", 30.0), ("grid.x_min", 20.0)])  # valid only as a pair, in this order
    assert (cfg.grid.x_min, cfg.grid.x_max) == (20.0, 30.0)


def test_a_parameter_file_applies_its_wildcard_and_the_nodes_own_sections_in_order(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(
        "/**:\n  ros__parameters:\n    mode: mv\n    latency_budget: 2.0\n    grid: {resolution: 0.5}\n"
        "/front/kdbts_node:\n  ros__parameters:\n    grid: {resolution: 0.25}\n"
        "/rear/*:\n  ros__parameters:\n    mode: auto\n"
        "/**/kdbts_node:\n  ros__parameters:\n    window_size: 6\n"
        "camera_driver:\n  ros__parameters:\n    window_size: 100\n"
    )
    front = load_config(PipelineConfig, f, node="/front/kdbts_node")
    assert (front.mode, front.grid.resolution, front.latency_budget, front.window_size) == ("mv", 0.25, 2.0, 6)
    rear = load_config(PipelineConfig, f, node="/rear/kdbts_node")
    assert (rear.mode, rear.grid.resolution, rear.window_size) == ("auto", 0.5, 6)
    # a file keyed by the node's name (the layout before /**) and a plain mapping read as before
    f.write_text("kdbts_node:\n  ros__parameters:\n    mode: mv\n")
    assert load_config(PipelineConfig, f).mode == "mv"
    f.write_text("mode: mv\n")
    assert load_config(PipelineConfig, f, node="/front/kdbts_node").mode == "mv"
    # a file with sections for other nodes only says so, naming them
    f.write_text("/front/kdbts_node:\n  ros__parameters:\n    mode: mv\n")
    with pytest.raises(ValueError, match=r"no parameters for /kdbts_node \(sections: /front/kdbts_node\).*/\*\*"):
        load_config(PipelineConfig, f)
