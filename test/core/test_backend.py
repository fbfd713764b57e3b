"""model.backend onnxruntime: the same frames through the runner give torch's outputs within fp32 rounding."""

from __future__ import annotations

import numpy as np
import pytest

from kdbts_ros.core.encoding import OnnxEncoder
from kdbts_ros.core.frames import Frame
from kdbts_ros.core.settings import ConfigError, set_param
from kdbts_ros.core.stages import Stages
from kdbts_ros.data.sequences import synthetic_sample
from kdbts_ros.runtime.config import RunnerConfig
from kdbts_ros.runtime.runner import FrameRunner

TOL = 1e-4


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh export cache for this module ($KDBTS_CACHE_DIR)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("kdbts_cache")
    mp.setenv("KDBTS_CACHE_DIR", str(root))
    yield root
    mp.undo()


def _config(backend: str, mode: str, window: int) -> RunnerConfig:
    cfg = RunnerConfig()
    cfg.model.device, cfg.model.backend, cfg.mode, cfg.window_size = "cpu", backend, mode, window
    cfg.keyframe.distance = 0.0  # every frame a keyframe: the window fills from the first frames
    return cfg


def _run(runner: FrameRunner, seq) -> list:
    return [
        runner.process(Frame(image, seq.K, (i + 1) * 10**8, "cam", T))
        for i, (image, T) in enumerate(zip(seq.images, seq.T_fixed_cam))
    ]


@pytest.mark.parametrize("mode,window,frames", [("sv", 1, 2), ("mv", 3, 4)])
def test_onnxruntime_outputs_are_torchs_within_fp32_rounding(cache, mode, window, frames):
    seq = synthetic_sample(frames)
    ours = FrameRunner(_config("onnxruntime", mode, window))
    assert isinstance(ours.stages.encoding.encoder, OnnxEncoder)
    # the grid's head, and the single-view head the depth image is rendered with (render.depth_head sv)
    assert ours.stages.backend_info["heads"] == (["sv"] if mode == "sv" else ["sv", "mv"])
    ref = _run(FrameRunner(_config("torch", mode, window)), seq)
    out = _run(ours, seq)
    for a, b in zip(out, ref):
        assert (a.head, a.num_views) == (b.head, b.num_views)
        seen = ~b.unseen
        assert np.array_equal(a.unseen, ~seen) and seen.any()
        assert float(np.abs(a.density[seen] - b.density[seen]).max()) <= TOL
        # occupancy (sigma > grid.occupied_density) identical: the same occupied voxels
        occupied = RunnerConfig().grid.occupied_density
        assert np.array_equal(a.density[seen] > occupied, b.density[seen] > occupied)
        assert np.array_equal(a.points, b.points)
        # the OccupancyGrid's whole percents may round the other way where a column sits on a .5
        assert np.array_equal(a.occupancy < 0, b.occupancy < 0)
        assert int(np.abs(a.occupancy.astype(int) - b.occupancy).max()) <= 1
        rendered = np.isfinite(b.depth)  # not in the padding of the network's view
        assert np.array_equal(np.isfinite(a.depth), rendered) and rendered.mean() > 0.7
        assert float((np.abs(a.depth - b.depth) / b.depth)[rendered].max()) <= TOL
    assert out[-1].num_views == window


def test_the_export_is_cached_by_weights_size_and_heads(cache):
    first = Stages(_config("onnxruntime", "sv", 1)).backend_info
    again = Stages(_config("onnxruntime", "sv", 1)).backend_info
    assert again["cached"] and again["key"] == first["key"]
    assert again["dir"].startswith(str(cache))
    cfg = _config("onnxruntime", "sv", 1)
    cfg.model.image_height, cfg.model.image_width = 64, 256
    other = Stages(cfg)
    encoder = other.encoding.encoder
    assert isinstance(encoder, OnnxEncoder)
    assert other.backend_info["key"] != first["key"] and encoder.backend.input_size == (64, 256)
    # nothing half-written is left beside the exports
    names = {p.name for p in (cache / "onnx").iterdir()}
    assert {first["key"], other.backend_info["key"]} <= names
    assert not [n for n in names if n.startswith(".")]


def test_onnxruntime_refuses_what_it_cannot_run():
    cfg = _config("onnxruntime", "sv", 1)
    with pytest.raises(ValueError, match=r"model\.fast true"):
        set_param(cfg, "model.fast", False)
    with pytest.raises(ValueError, match="float32"):
        set_param(cfg, "model.dtype", "float16")
    cfg = _config("onnxruntime", "sv", 1)
    cfg.model.device = "cuda"
    with pytest.raises(ConfigError, match="cuda"):
        Stages(cfg)
