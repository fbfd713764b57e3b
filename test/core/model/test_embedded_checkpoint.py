"""The shipped KDBTS checkpoint: size, contents, default use, and that it learned something."""

from __future__ import annotations

import pytest
from conftest import KITTI_SAMPLE, needs_kitti

from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.loading import EMBEDDED_CHECKPOINT, checkpoint_camera
from kdbts_ros.core.model.checkpoint import load_checkpoint, random_model
from kdbts_ros.core.stages import Stages
from kdbts_ros.data import shared_sample
from kdbts_ros.evaluation.priors import PRIORS
from kdbts_ros.evaluation.real_depth import RealDepthEvaluator, RealDepthSettings

pytestmark = pytest.mark.integration


def test_embedded_checkpoint_is_small_and_holds_the_distilled_student_of_real_and_procedural_streets():
    assert EMBEDDED_CHECKPOINT.stat().st_size <= 25 * 1024 * 1024
    model, info = load_checkpoint(EMBEDDED_CHECKPOINT)
    assert model.available_heads == ["sv", "mv"] and model.arch.grey_input
    assert info["method"] == "kdbts" and (info["image_height"], info["image_width"]) == (96, 320)
    # its metadata names what it was trained on: the real KITTI odometry frames and the procedural streets
    assert "kitti_odometry/sequences/00" in info["data"] and "synth " in info["data"]
    assert "2011_09_26" not in info["data"] and "KITTI360" not in info["data"]  # held out for evaluation


def test_the_default_configuration_runs_the_embedded_checkpoint_at_its_training_size():
    stages = Stages(PipelineConfig())
    assert stages.model_info["weights"] == str(EMBEDDED_CHECKPOINT)
    assert stages.input_size == (96, 320)
    cfg = PipelineConfig()
    cfg.model.checkpoint, cfg.model.backbone = "random", "resnet18"
    assert Stages(cfg).input_size == (192, 640)  # random and official weights: the official size
    cfg.model.image_height, cfg.model.image_width = 64, 224
    assert Stages(cfg).input_size == (64, 224)


@needs_kitti
def test_the_embedded_student_beats_random_weights_and_the_image_free_priors_on_held_out_real_frames():
    # drive 0052 was never trained on (the training data are KITTI odometry 00/01/07 and procedural streets)
    ev = RealDepthEvaluator(shared_sample.raw_sample(KITTI_SAMPLE), RealDepthSettings(stride=3))
    trained, info = load_checkpoint(EMBEDDED_CHECKPOINT)
    camera = checkpoint_camera(info)  # the network sees each frame through the camera it was trained with
    ours = ev.run(trained, "sv", camera, progress=False)
    chance = ev.run(random_model(trained.arch, 1), "sv", camera, progress=False)
    priors = [ev.run_prior(prior) for prior in PRIORS]
    assert ours["frames"] == 4
    assert ours["rmse"] < min(r["rmse"] for r in [chance, *priors])
    assert ours["a1"] > max(r["a1"] for r in [chance, *priors])
