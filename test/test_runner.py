"""The runner: intake of serialized inputs and the counted ways a frame can fail."""
import numpy as np
import pytest

from conftest import SMALL_ARCH, small_config
from kdbts_ros import messages as M
from kdbts_ros.core.model.checkpoint import random_model
from kdbts_ros.core.pipeline import Pipeline
from kdbts_ros.runner import FrameRunner

K = np.array([[60.0, 0, 60], [0, 60, 20], [0, 0, 1]])


def _feed(runner: FrameRunner, stamp: int) -> None:
    runner.on_tf(M.serialize(M.tf_message([("odom", "cam", stamp, np.eye(4))])), static=False)
    runner.on_camera_info(M.serialize(M.camera_info(K, 120, 40, stamp, "cam")))
    runner.on_image(M.serialize(M.rgb_image(np.full((40, 120, 3), 90, np.uint8), stamp, "cam")), stamp)


def test_a_failing_frame_is_counted_and_the_next_one_is_processed(monkeypatch):
    runner = FrameRunner(small_config())
    real = runner.pipeline.process
    monkeypatch.setattr(runner.pipeline, "process", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    _feed(runner, 10)
    assert runner.step(10) == [] and runner.drops["processing_error"] == 1 and runner.pending is None
    monkeypatch.setattr(runner.pipeline, "process", real)
    _feed(runner, 20)
    assert {t for t, _, _ in runner.step(20)} >= {"/kdbts/occupancy", "/kdbts/depth"}


def test_mode_mv_is_refused_for_weights_without_a_multi_view_head():
    model = random_model(SMALL_ARCH, 0)
    model.available_heads = ["sv"]
    pipeline = Pipeline(small_config(), model)
    assert pipeline.mode_problem("mv") and pipeline.mode_problem("auto") is None
    with pytest.raises(ValueError, match="needs a multi-view head"):
        Pipeline(small_config(mode="mv"), model)
