"""The fused SV ray march (render.fused), compiled by torch and hand-written (march.c): the same depth as torch's
operators, early termination within its bound, and a clean fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import NoCompiler, slab_model, small_config

from kdbts_ros.core.camera import ray_grid
from kdbts_ros.core.frames import Frame
from kdbts_ros.core.inference import folded_ray_render, ray_render, views_of
from kdbts_ros.core.model import compiled, folded, native_march
from kdbts_ros.core.model.checkpoint import random_model
from kdbts_ros.core.model.compiled import Compiled
from kdbts_ros.core.model.native_march import NativeMarch
from kdbts_ros.core.model.network import Architecture
from kdbts_ros.core.model.ray_march import CompiledMarch
from kdbts_ros.core.model.ray_march import march as ray_march
from kdbts_ros.core.model.render import RayRender, sample_depths
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


MARCHES = {"compiled": CompiledMarch, "native": NativeMarch}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """march.c built into one cache for this module, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.parametrize("kind", MARCHES)
@pytest.mark.parametrize("seed,samples", [(0, 64), (1, 17)])
def test_the_fused_march_renders_what_torchs_operators_and_the_reference_render(kind, seed, samples):
    model, views, planes, dirs = _scene(seed)
    march = MARCHES[kind]()
    with torch.inference_mode():
        fused = folded_ray_render(
            model, views.Kn[0], views.w2c[0], planes, "sv", dirs, samples, 3.0, 80.0, 4096, march=march
        )
        unfused = folded_ray_render(model, views.Kn[0], views.w2c[0], planes, "sv", dirs, samples, 3.0, 80.0, 4096)
        reference = ray_render(model, views, "sv", dirs, samples, 3.0, 80.0, 4096)
    assert march.problem is None  # it was built and ran, not fallen back
    for out in (unfused, reference):
        torch.testing.assert_close(fused.depth, out.depth, rtol=1e-5, atol=0)
        torch.testing.assert_close(fused.opacity, out.opacity, rtol=0, atol=1e-5)
    assert float(fused.depth.std()) > 0.1  # the rays differ: the comparison is not of constants


@pytest.mark.parametrize("kind", MARCHES)
def test_a_wall_stops_the_fused_march_where_it_stands(kind):
    """Analytic: the slab network's density jumps at camera depth 12 m, so every ray's depth is near 12 m."""
    model = slab_model(12.0).eval()
    features = torch.randn(1, model.arch.feature_dim, 16, 48)
    views = views_of(features, Kn[None], torch.eye(4)[None])
    planes = [folded.fold_features(model, features[0], "sv")]
    dirs = ray_grid(Kn, 16, 48).reshape(-1, 3)
    with torch.inference_mode():
        out = folded_ray_render(
            model, views.Kn[0], views.w2c[0], planes, "sv", dirs, 64, 3.0, 80.0, 4096, march=MARCHES[kind]()
        )
    # the first sample behind the wall takes the light: depth within one sample spacing after 12 m
    t = 1.0 / torch.linspace(1 / 3.0, 1 / 80.0, 65)
    spacing = float((t[t > 12.0][1] - t[t > 12.0][0]).abs())
    assert torch.all(out.depth > 12.0 - 0.1) and torch.all(out.depth < 12.0 + spacing + 0.5)
    assert torch.all(out.opacity > 0.99)


def test_a_march_that_cannot_be_built_says_why_once_and_renders_unfused(monkeypatch):
    monkeypatch.setattr(compiled.torch, "compile", NoCompiler())
    NoCompiler.calls = 0
    model, views, planes, dirs = _scene(2)
    march = CompiledMarch()
    with torch.inference_mode():
        first = folded_ray_render(
            model, views.Kn[0], views.w2c[0], planes, "sv", dirs, 32, 3.0, 80.0, 4096, march=march
        )
        second = folded_ray_render(
            model, views.Kn[0], views.w2c[0], planes, "sv", dirs, 32, 3.0, 80.0, 4096, march=march
        )
        unfused = folded_ray_render(model, views.Kn[0], views.w2c[0], planes, "sv", dirs, 32, 3.0, 80.0, 4096)
    assert march.problem == "RuntimeError: InductorError: CppCompileError: C++ compile error"
    assert NoCompiler.calls == 1  # not rebuilt for every frame
    assert torch.equal(first.depth, unfused.depth) and torch.equal(second.opacity, unfused.opacity)


def test_the_node_counts_frames_rendered_without_the_fused_march_and_keeps_publishing_depth(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")  # march.c, the CPU's march, cannot be built
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


def _terms(seed: int, rays: int, hidden: int, samples: int, scale: float):
    """march.c's terms at random: a map of 50 texels, four taps per ray, an x, y code term, a z code term per
    sample, an output layer and inverse-depth samples."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(50, hidden, generator=g) * scale
    taps = torch.randint(0, 50, (rays, 4), generator=g)
    tap_w = torch.rand(rays, 4, generator=g)
    xy_term = torch.randn(rays, hidden, generator=g) * scale
    per_sample = torch.randn(hidden, samples, generator=g) * scale
    w_out, b_out = torch.randn(hidden, generator=g) * 0.3, torch.randn(1, generator=g)
    return (
        rows,
        taps,
        tap_w / tap_w.sum(1, keepdim=True),
        xy_term,
        per_sample,
        w_out,
        b_out,
        sample_depths(1, samples, 3.0, 80.0)[0],
    )


def _exact(rows, taps, tap_w, xy_term, per_sample, w_out, b_out, t) -> RayRender:
    """torch's operators in float64: the independent computation march.c is held to."""
    per_ray = (rows.double()[taps] * tap_w.double()[..., None]).sum(1) + xy_term.double()
    p = [x.double() for x in (per_sample, w_out, b_out, t)]
    logits = (torch.relu(per_ray[:, :, None] + p[0][None]) * p[1][None, :, None]).sum(1) + p[2]
    return RayRender.of(torch.nn.functional.softplus(logits), p[3].expand(len(per_ray), -1))


@pytest.mark.parametrize(
    "rays,hidden,samples,scale",
    [(1000, 64, 64, 0.5), (13, 7, 17, 0.5), (301, 33, 100, 0.5), (517, 64, 64, 4.0), (9, 64, 1, 0.5)],
)
def test_the_native_march_renders_what_torchs_operators_do(rays, hidden, samples, scale):
    """Odd ray, unit and sample counts (partial groups and blocks); scale 4 puts logits past softplus's
    threshold of 20 and far below zero, where transmittance ends within a block."""
    terms = _terms(rays + hidden, rays, hidden, samples, scale)
    out, exact = NativeMarch().run(*terms), _exact(*terms)
    if scale > 1:
        pre = (terms[0][terms[1]] * terms[2][..., None]).sum(1) + terms[3]
        logits = (torch.relu(pre[:, :, None] + terms[4][None]) * terms[5][None, :, None]).sum(1) + terms[6]
        assert float(logits.max()) > 20 and float(logits.min()) < -20
    torch.testing.assert_close(out.depth.double(), exact.depth, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.opacity.double(), exact.opacity, rtol=0, atol=1e-5)
    assert out.depth.dtype == torch.float32
    assert samples == 1 or float(exact.depth.std()) > 0.1  # the rays differ: not a comparison of constants


def test_native_early_termination_moves_the_depth_by_at_most_the_light_it_leaves_out(monkeypatch):
    """A ray group stops once every transmittance is below the threshold: the samples it skips held at most that
    share of the light, each at most z_far away."""
    terms = _terms(5, 4000, 64, 64, 2.0)
    exact = _exact(*terms)
    monkeypatch.setattr(native_march, "TRANSMITTANCE_SPENT", 1e-2)
    stopped = NativeMarch().run(*terms)
    error = (stopped.depth.double() - exact.depth).abs()
    assert float(error.max()) > 1e-3  # groups stopped early: the threshold is honoured, not ignored
    assert float(error.max()) <= 1e-2 * 80.0 + 1e-4


def test_a_head_wider_than_march_c_takes_is_rendered_by_torchs_operators():
    march = NativeMarch()
    assert march.run(*_terms(0, 20, 513, 8, 0.5)) is None
    assert march.problem == "march.c takes at most 512 hidden units, the head has 513"


def test_march_c_is_built_once_and_a_damaged_cache_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    builds = []
    run = native_march.subprocess.run
    monkeypatch.setattr(native_march.subprocess, "run", lambda cmd, **kw: builds.append(cmd) or run(cmd, **kw))
    lib = native_march.build()
    damaged = tmp_path / "damaged"
    damaged.write_bytes(lib.read_bytes()[:1000])  # a disk that filled up, a copy cut short
    damaged.replace(lib)
    terms = _terms(3, 50, 16, 20, 0.5)
    first = NativeMarch().run(*terms)
    assert first is not None and len(builds) == 2  # built again
    torch.testing.assert_close(first.depth.double(), _exact(*terms).depth, rtol=1e-5, atol=1e-5)
    assert NativeMarch().run(*terms).depth.equal(first.depth) and len(builds) == 2  # then taken from the cache


def test_a_native_march_without_a_compiler_says_why_and_renders_unfused(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    model, views, planes, dirs = _scene(4)
    march = NativeMarch()
    with torch.inference_mode():
        fused = folded_ray_render(
            model, views.Kn[0], views.w2c[0], planes, "sv", dirs, 32, 3.0, 80.0, 4096, march=march
        )
        unfused = folded_ray_render(model, views.Kn[0], views.w2c[0], planes, "sv", dirs, 32, 3.0, 80.0, 4096)
    assert march.problem is not None and "/nonexistent/cc" in march.problem
    assert march.problem in compiled.problems()  # the node's not_compiled fault gives this reason
    assert torch.equal(fused.depth, unfused.depth)
