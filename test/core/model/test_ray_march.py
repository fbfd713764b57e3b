"""The fused SV ray march (render.fused): the same depth as torch's operators, and a clean fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import slab_model, small_config

from kdbts_ros.core.camera import ray_grid
from kdbts_ros.core.frames import Frame
from kdbts_ros.core.inference import folded_ray_render, ray_render, views_of
from kdbts_ros.core.model import compiled, folded
from kdbts_ros.core.model.checkpoint import random_model
from kdbts_ros.core.model.compiled import Compiled
from kdbts_ros.core.model.network import Architecture
from kdbts_ros.core.model.ray_march import march as ray_march
from kdbts_ros.runtime.runner import FrameRunner

pytestmark = pytest.mark.integration

Kn = torch.tensor([[0.7, 0.0, 0.05], [0.0, 2.3, 0.1], [0.0, 0.0, 1.0]])


def _scene(seed: int, h: int = 24, w: int = 80):
    """A random network, one view of random features, and rays through a grid that overshoots the image."""
    torch.manual_seed(seed)
    model = random_model(Architecture("resnet18"), seed).eval()
    features = torch.randn(1, model.arch.feature_dim, h, w)
    views = views_of(features, Kn[None], torch.eye(4)[None])
    dirs = ray_grid(Kn, h + 3, w + 5).reshape(-1, 3) * torch.tensor([1.05, 1.05, 1.0])  # some rays leave the map
    return model, views, [folded.fold_features(model, features[0], "sv")], dirs


@pytest.mark.parametrize("seed,samples", [(0, 64), (1, 17)])
def test_the_compiled_march_renders_what_torchs_operators_and_the_reference_render(seed, samples):
    model, views, planes, dirs = _scene(seed)
    march = Compiled(ray_march)
    with torch.inference_mode():
        fused = folded_ray_render(model, views, planes, "sv", dirs, samples, 3.0, 80.0, 4096, march=march)
        unfused = folded_ray_render(model, views, planes, "sv", dirs, samples, 3.0, 80.0, 4096)
        reference = ray_render(model, views, "sv", dirs, samples, 3.0, 80.0, 4096)
    assert march.problem is None  # it was built and ran, not fallen back
    for out in (unfused, reference):
        torch.testing.assert_close(fused.depth, out.depth, rtol=1e-5, atol=0)
        torch.testing.assert_close(fused.opacity, out.opacity, rtol=0, atol=1e-5)
    assert float(fused.depth.std()) > 0.1  # the rays differ: the comparison is not of constants


def test_a_wall_stops_the_compiled_march_where_it_stands():
    """Analytic: the slab network's density jumps at camera depth 12 m, so every ray's depth is near 12 m."""
    model = slab_model(12.0).eval()
    features = torch.randn(1, model.arch.feature_dim, 16, 48)
    views = views_of(features, Kn[None], torch.eye(4)[None])
    planes = [folded.fold_features(model, features[0], "sv")]
    dirs = ray_grid(Kn, 16, 48).reshape(-1, 3)
    with torch.inference_mode():
        out = folded_ray_render(model, views, planes, "sv", dirs, 64, 3.0, 80.0, 4096, march=Compiled(ray_march))
    # the first sample behind the wall takes the light: depth within one sample spacing after 12 m
    t = 1.0 / torch.linspace(1 / 3.0, 1 / 80.0, 65)
    spacing = float((t[t > 12.0][1] - t[t > 12.0][0]).abs())
    assert torch.all(out.depth > 12.0 - 0.1) and torch.all(out.depth < 12.0 + spacing + 0.5)
    assert torch.all(out.opacity > 0.99)


class _NoCompiler:
    """Stands in for torch.compile where no C++ compiler is installed: the build fails on the first call."""

    calls = 0

    def __call__(self, fn, **_kwargs):
        def build(*_args):
            _NoCompiler.calls += 1
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\nno such file: g++")

        return build


def test_a_march_that_cannot_be_built_says_why_once_and_renders_unfused(monkeypatch):
    monkeypatch.setattr(compiled.torch, "compile", _NoCompiler())
    _NoCompiler.calls = 0
    model, views, planes, dirs = _scene(2)
    march = Compiled(ray_march)
    with torch.inference_mode():
        first = folded_ray_render(model, views, planes, "sv", dirs, 32, 3.0, 80.0, 4096, march=march)
        second = folded_ray_render(model, views, planes, "sv", dirs, 32, 3.0, 80.0, 4096, march=march)
        unfused = folded_ray_render(model, views, planes, "sv", dirs, 32, 3.0, 80.0, 4096)
    assert march.problem == "RuntimeError: InductorError: CppCompileError: C++ compile error"
    assert _NoCompiler.calls == 1  # not rebuilt for every frame
    assert torch.equal(first.depth, unfused.depth) and torch.equal(second.opacity, unfused.opacity)


def test_the_node_counts_frames_rendered_without_the_compiled_march_and_keeps_publishing_depth(monkeypatch):
    monkeypatch.setattr(compiled.torch, "compile", _NoCompiler())
    K = np.array([[120.0, 0, 97], [0, 120, 33], [0, 0, 1]])
    img = np.random.default_rng(0).integers(0, 255, (64, 192, 3), dtype=np.uint8)
    outs = {}
    for fused in (False, True):  # the process's failed build counts from when it fails
        runner = FrameRunner(small_config(**{"render.fused": fused}))
        outs[fused] = [runner.process(Frame(img, K, (i + 1) * 10**8, "cam", None)) for i in range(2)]
        assert runner.faults["not_compiled"] == (2 if fused else 0)
    for a, b in zip(outs[True], outs[False]):
        np.testing.assert_array_equal(a.depth, b.depth)
        assert np.isfinite(a.depth).any()


def test_running_out_of_device_memory_is_the_frames_problem_not_the_builds(monkeypatch):
    def out_of_memory(fn, **_kwargs):
        def run(*_args):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

        return run

    monkeypatch.setattr(compiled.torch, "compile", out_of_memory)
    march = Compiled(ray_march)
    with pytest.raises(torch.cuda.OutOfMemoryError):  # the runner skips the frame and halves its chunks
        march(torch.zeros(2, 4), torch.zeros(4, 3), torch.zeros(4), torch.zeros(1), torch.ones(3))
    assert march.problem is None  # not marked unbuildable: the next frame runs it again
