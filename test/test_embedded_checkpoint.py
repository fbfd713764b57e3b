"""The shipped KDBTS checkpoint: size, contents, default use, and that it learned something."""
from __future__ import annotations

import pytest

from kdbts_ros.config import PipelineConfig
from kdbts_ros.core.model.checkpoint import load_checkpoint, random_model
from kdbts_ros.core.pipeline import EMBEDDED_CHECKPOINT, Pipeline
from kdbts_ros.data.rig import RigConfig
from kdbts_ros.data.synth_folder import write_sequence
from kdbts_ros.evaluation.evaluate import EvalSettings, Evaluator


def test_embedded_checkpoint_is_small_and_holds_the_distilled_student_of_real_and_procedural_streets():
    assert EMBEDDED_CHECKPOINT.stat().st_size <= 25 * 1024 * 1024
    model, info = load_checkpoint(EMBEDDED_CHECKPOINT)
    assert model.available_heads == ["sv", "mv"] and model.arch.grey_input
    assert info["method"] == "kdbts" and (info["image_height"], info["image_width"]) == (96, 320)
    # its metadata names what it was trained on: the real KITTI odometry frames and the procedural streets
    assert "kitti_odometry/sequences/00" in info["data"] and "synth " in info["data"]
    assert "2011_09_26" not in info["data"] and "KITTI360" not in info["data"]  # held out for evaluation


def test_the_default_configuration_runs_the_embedded_checkpoint_at_its_training_size():
    pipeline = Pipeline(PipelineConfig())
    assert pipeline.model_info["weights"] == str(EMBEDDED_CHECKPOINT)
    assert pipeline.input_size == (96, 320)
    cfg = PipelineConfig()
    cfg.model.checkpoint, cfg.model.backbone = "random", "resnet18"
    assert Pipeline(cfg).input_size == (192, 640)  # random and official weights: the official size
    cfg.model.image_height, cfg.model.image_width = 64, 224
    assert Pipeline(cfg).input_size == (64, 224)


@pytest.fixture(scope="module")
def unseen_street(tmp_path_factory):
    """A street from a seed neither training (0-23) nor the benchmark's held-out set (1000-1005) used."""
    root = tmp_path_factory.mktemp("unseen")
    write_sequence(root, 4242, 3, RigConfig())
    return root


def test_the_embedded_student_beats_random_weights_on_an_unseen_street(unseen_street):
    ev = Evaluator(unseen_street, EvalSettings(stride=1, pixel_step=4))
    trained, _ = load_checkpoint(EMBEDDED_CHECKPOINT)
    ours = ev.run(trained, "sv", progress=False)
    chance = ev.run(random_model(trained.arch, 1), "sv", progress=False)
    assert ours["abs_rel"] < 0.7 * chance["abs_rel"] and ours["a1"] > chance["a1"]
