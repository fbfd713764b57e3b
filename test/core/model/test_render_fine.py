"""Coarse-to-fine depth rendering against the 64-sample reference render (fewer evaluations, same depth)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import KITTI_SAMPLE, needs_kitti

from kdbts_ros.core.camera import ray_grid
from kdbts_ros.core.field import Query
from kdbts_ros.core.frames import Frame
from kdbts_ros.core.model import folded
from kdbts_ros.core.model.render import render_depth, sample_depths
from kdbts_ros.core.model.render_fine import FineStats, coarse_indices, render_depth_fine
from kdbts_ros.data.sequences import kitti_sample, synthetic_sample
from kdbts_ros.runtime.config import RunnerConfig
from kdbts_ros.runtime.runner import FrameRunner

NEAR, FAR, S = 3.0, 80.0, 64


def _wall(z_wall: torch.Tensor):
    """Density 0 in front of each ray's wall depth and 1000/m behind it (rays of unit z)."""

    def fn(d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.where(t * d[:, 2:3] >= z_wall[d[:, 0].long()][:, None], 1000.0, 0.0)

    return fn


def test_coarse_indices_cover_both_ends():
    assert coarse_indices(64, 4) == [*range(0, 64, 4), 63]
    assert coarse_indices(9, 4) == [0, 4, 8]


def test_a_wall_ends_every_ray_at_the_first_sample_behind_it_in_fewer_evaluations():
    z_wall = torch.linspace(3.5, 60.0, 200)
    dirs = torch.stack([torch.arange(200.0), torch.zeros(200), torch.ones(200)], -1)  # x carries the ray's index
    stats = FineStats()
    fine = render_depth_fine(_wall(z_wall), dirs, S, NEAR, FAR, 4096, stats=stats).depth
    ref = render_depth(_wall(z_wall), dirs, S, NEAR, FAR, 4096).depth
    t = sample_depths(1, S, NEAR, FAR)[0]
    exact = t[torch.searchsorted(t, z_wall)]  # the wall is opaque at its first sample
    assert torch.allclose(ref, exact, rtol=1e-5) and torch.allclose(fine, exact, rtol=1e-5)
    assert stats.reference == 200 * S and stats.evaluations <= 0.45 * stats.reference


def test_refining_every_block_is_the_reference():
    g = torch.Generator().manual_seed(0)
    sig = torch.rand(50, S, generator=g) * 0.3

    def fn(d, t):  # a smooth random density per ray, as a function of the depth
        return torch.stack([torch.sin(t[i] * (1 + d[i, 0])) ** 2 * sig[int(d[i, 1]), 0] for i in range(len(d))])

    dirs = torch.stack([torch.rand(50, generator=g), torch.arange(50.0), torch.ones(50)], -1)
    fine = render_depth_fine(fn, dirs, S, NEAR, FAR, 1 << 14, min_transmittance=-1, min_optical_depth=-1)
    ref = render_depth(fn, dirs, S, NEAR, FAR, 1 << 14)
    assert torch.allclose(fine.depth, ref.depth, rtol=1e-6) and torch.allclose(fine.opacity, ref.opacity, atol=1e-6)


def _depth_agreement(seq, n_views: int) -> tuple[float, float]:
    """Share of pixels whose fine depth is within 1 % of the reference, and the share of evaluations."""
    cfg = RunnerConfig()
    cfg.mode, cfg.window_size, cfg.model.device = ("mv" if n_views > 1 else "sv"), n_views, "cpu"
    runner = FrameRunner(cfg)
    stages = runner.stages
    H, W = stages.input_size
    rel, stats = [], FineStats()
    with stages.precision():
        for i, (image, T) in enumerate(zip(seq.images, seq.T_fixed_cam)):
            entry = stages.encoding.encode(Frame(image, seq.K, i + 1, "cam", T), runner.heads.for_mode())
            runner.window.push(entry)
            if i + 1 < n_views:
                continue
            spec = runner.grid_budget.spec(cfg.grid)
            query = Query.of(*runner.heads.choose(entry, (), runner.window.posed(), spec), stages.device)
            head, views, planes = query.head, query.views, stages.field.planes(query)
            assert len(planes) == n_views
            dirs = ray_grid(entry.Kn, H // 4, W // 4).reshape(-1, 3)
            Kn, w2c = views.Kn[0], views.w2c[0]

            def fn(d, t, shared=False):  # called within this iteration only: late binding cannot bite
                return folded.ray_density(stages.model, d, t, planes, Kn, w2c, head, shared_depths=shared)  # noqa: B023

            ref = render_depth(lambda d, t: fn(d, t, True), dirs, S, NEAR, FAR, 1 << 16).depth
            fine = render_depth_fine(
                fn, dirs, S, NEAR, FAR, 1 << 16, coarse_fn=lambda d, t: fn(d, t, True), stats=stats
            ).depth
            rel.append(((fine - ref).abs() / ref).numpy())
    rel = np.concatenate(rel)
    return float((rel < 0.01).mean()), stats.evaluations / stats.reference


@pytest.mark.parametrize("n_views", [1, 2])
def test_embedded_network_depth_on_procedural_frames(n_views):
    within, fraction = _depth_agreement(synthetic_sample(n_views + 1), n_views)
    assert within >= 0.99 and fraction < 0.7


@needs_kitti
@pytest.mark.parametrize("n_views", [1, 4])
def test_embedded_network_depth_on_real_kitti_frames(n_views):
    within, fraction = _depth_agreement(kitti_sample(KITTI_SAMPLE, n_views + 1), n_views)
    assert within >= 0.99 and fraction < 0.6


@pytest.mark.parametrize("mode,window,frames", [("sv", 1, 2), ("mv", 3, 4)])
def test_the_runners_fine_depth_is_its_reference_depth(mode, window, frames):
    """render.fine through FrameRunner.process: 99 % of pixels within 1 % of the full 64-sample render."""
    seq = synthetic_sample(frames)
    depths = {}
    for fine in (False, True):
        cfg = RunnerConfig()
        cfg.mode, cfg.window_size, cfg.model.device, cfg.render.fine = mode, window, "cpu", fine
        cfg.render.depth_scale, cfg.keyframe.distance = 0.5, 0.0
        runner = FrameRunner(cfg)
        depths[fine] = [
            runner.process(Frame(image, seq.K, (i + 1) * 10**8, "cam", T), want_grid=False).depth
            for i, (image, T) in enumerate(zip(seq.images, seq.T_fixed_cam))
        ]
    rel = np.concatenate([(np.abs(f - r) / r).ravel() for f, r in zip(depths[True], depths[False])])
    # the procedural camera is wider than the embedded network's: its padding has no depth in either render
    seen = np.isfinite(rel)
    assert seen.mean() > 0.7 and float((rel[seen] < 0.01).mean()) >= 0.99
    assert not np.array_equal(depths[True][-1], depths[False][-1])  # the fine render did run


def test_seeded_jitter_keeps_the_reference_render():
    seq = synthetic_sample(1)
    out = []
    for fine in (False, True):
        cfg = RunnerConfig()
        cfg.model.device, cfg.render.fine, cfg.render.jitter, cfg.render.depth_scale = "cpu", fine, "seeded", 0.25
        out.append(
            FrameRunner(cfg).process(Frame(seq.images[0], seq.K, 1, "cam", seq.T_fixed_cam[0]), want_grid=False).depth
        )
    assert np.array_equal(out[0], out[1], equal_nan=True) and np.isfinite(out[0]).mean() > 0.7
