"""The fast inference path (model.fast) against the plain reference path, and the work it does once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import small_config

from kdbts_ros.core import field
from kdbts_ros.core.camera import ray_grid
from kdbts_ros.core.field import Query, choose_field
from kdbts_ros.core.frames import Frame
from kdbts_ros.core.model import folded
from kdbts_ros.core.model.checkpoint import random_model
from kdbts_ros.core.model.network import Architecture, Views
from kdbts_ros.core.model.render import sample_depths
from kdbts_ros.runtime.runner import FrameRunner

pytestmark = pytest.mark.integration

K = np.array([[120.0, 0, 97], [0, 120, 33], [0, 0, 1]])


def _sequence(cfg, n: int = 4, seed: int = 0, Ks: list[np.ndarray] | None = None) -> list:
    """Outputs of n frames of a camera driving forward and drifting right (random images), with intrinsics Ks[i]."""
    rng = np.random.default_rng(seed)
    runner = FrameRunner(cfg)
    outs = []
    for i in range(n):
        T = np.eye(4)
        T[:3, 3] = (0.1 * i, 0.0, 1.0 * i)
        img = rng.integers(0, 255, (64, 192, 3), dtype=np.uint8)
        outs.append(runner.process(Frame(img, K if Ks is None else Ks[i], (i + 1) * 10**8, "cam", T)))
    return outs


def _assert_same_outputs(ref, fast) -> None:
    assert (ref.head, ref.num_views) == (fast.head, fast.num_views)
    assert np.array_equal(ref.unseen, fast.unseen)
    seen = ~ref.unseen
    np.testing.assert_allclose(fast.density[seen], ref.density[seen], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast.depth, ref.depth, rtol=1e-5)  # NaN (sky, padding) at the same pixels
    np.testing.assert_allclose(fast.depth_confidence, ref.depth_confidence, atol=1e-5)
    assert np.array_equal(ref.occupancy, fast.occupancy)
    np.testing.assert_array_equal(fast.points, ref.points)


@pytest.mark.parametrize("mode,jitter", [("sv", "none"), ("mv", "none"), ("mv", "seeded"), ("auto", "none")])
def test_fast_path_matches_the_reference_path(mode, jitter):
    outs = {
        fast: _sequence(
            small_config(
                **{"mode": mode, "window_size": 3, "model.fast": fast, "render.jitter": jitter, "render.samples": 24}
            )
        )
        for fast in (False, True)
    }
    for ref, fast in zip(outs[False], outs[True]):
        _assert_same_outputs(ref, fast)
    assert [o.num_views for o in outs[True]] == ([1, 1, 1, 1] if mode == "sv" else [1, 2, 3, 3])


@pytest.mark.parametrize("mode", ["sv", "mv"])
def test_the_fast_paths_kept_rays_and_cells_follow_a_change_of_intrinsics(mode):
    """The depth rays, grid cells and their code terms are kept while the camera stays: a zoomed camera_info
    (frame 2) and its return (frame 3) must not be served the other lens's."""
    zoomed = K.copy()
    zoomed[0, 0], zoomed[1, 1], zoomed[0, 2] = 150.0, 150.0, 90.0
    Ks = [K, K, zoomed, K]
    cfg = {"mode": mode, "window_size": 2, "render.samples": 24}
    ref, fast = (_sequence(small_config(**cfg, **{"model.fast": f}), Ks=Ks) for f in (False, True))
    for r, f in zip(ref, fast):
        _assert_same_outputs(r, f)
    assert not np.allclose(ref[2].depth, ref[1].depth, equal_nan=True)  # the zoom changes what the frame shows


def test_ray_density_equals_point_density_including_border_rays():
    model = random_model(Architecture("resnet18"), 3).eval()
    V = 3
    feats = torch.randn(V, 64, 12, 40)
    Kn = torch.tensor([[1.2, 0, 0.05], [0, 3.9, -0.1], [0, 0, 1.0]]).expand(V, 3, 3).clone()
    w2c = torch.eye(4).expand(V, 4, 4).clone()
    w2c[1, :3, 3] = torch.tensor([0.3, 0.0, 2.0])
    w2c[2, :3, 3] = torch.tensor([-0.5, 0.1, -4.0])  # a view ahead: many samples fall outside it
    dirs = ray_grid(Kn[0], 5, 7).reshape(-1, 3)  # the outer rays sit exactly on the image border
    views = Views(feats[None], Kn[None], w2c[None])
    for t, shared in (
        (sample_depths(len(dirs), 16, 3.0, 80.0), True),
        (sample_depths(len(dirs), 16, 3.0, 80.0, torch.Generator().manual_seed(1)), False),
    ):
        points = (dirs[:, None] * t[..., None]).reshape(-1, 3)
        with torch.no_grad():
            for head in ("sv", "mv"):
                planes = torch.stack([folded.fold_features(model, f, head) for f in feats])
                ref = model.density(points[None], views, head)[0][0].view_as(t)
                torch.testing.assert_close(
                    folded.ray_density(model, dirs, t, planes, Kn, w2c, head, shared), ref, rtol=1e-5, atol=1e-5
                )
                sigma, invalid = folded.folded_density(model, points, planes, Kn, w2c, head)
                torch.testing.assert_close(sigma.view_as(t), ref, rtol=1e-5, atol=1e-5)
                ref_invalid = model.density(points[None], views, head)[1][0]
                assert torch.equal(invalid, ref_invalid if head == "mv" else ref_invalid[:, :1])


def test_the_fast_path_never_stacks_the_windows_feature_maps(monkeypatch):
    """Stacking the window's full-size maps into fresh memory cost 100-350 ms a frame at MV(4), 640x192: only the
    reference path (the model's own query) reads them stacked."""
    stacked = []
    views_of = field.views_of
    monkeypatch.setattr(
        field, "views_of", lambda features, *rest: stacked.append(len(features)) or views_of(features, *rest)
    )
    runner = FrameRunner(small_config(**{"mode": "mv", "window_size": 3, "render.samples": 8}))
    rng = np.random.default_rng(2)
    for i in range(4):
        T = np.eye(4)
        T[2, 3] = float(i)
        out = runner.process(Frame(rng.integers(0, 255, (64, 192, 3), dtype=np.uint8), K, (i + 1) * 10**8, "c", T))
    assert out.num_views == 3 and stacked == []
    # the reference path's query of the same window does stack them
    assert Query.of("mv", runner.window.posed(), runner.stages.device).views.features.shape[1] == 3 and stacked == [3]


def test_each_frame_is_encoded_and_folded_once(monkeypatch):
    cfg = small_config(mode="auto", window_size=4)
    runner = FrameRunner(cfg)
    calls = {"encode": 0, "fold": []}
    encode = runner.stages.model.encode

    def counting_encode(x):
        calls["encode"] += 1
        return encode(x)

    fold = folded.fold_features

    def counting_fold(model, features, head):
        calls["fold"].append(head)
        return fold(model, features, head)

    monkeypatch.setattr(runner.stages.model, "encode", counting_encode)
    monkeypatch.setattr(folded, "fold_features", counting_fold)
    rng = np.random.default_rng(1)
    for i in range(6):
        T = np.eye(4)
        T[2, 3] = float(i)
        out = runner.process(Frame(rng.integers(0, 255, (64, 192, 3), dtype=np.uint8), K, (i + 1) * 10**8, "c", T))
    assert out.num_views == 4
    assert calls["encode"] == 6
    # auto mode may use either head, so each frame gets both folded maps, once
    assert sorted(calls["fold"]) == ["mv"] * 6 + ["sv"] * 6


def test_only_grid_cells_the_camera_sees_are_decoded(monkeypatch):
    cfg = small_config(mode="sv")
    runner = FrameRunner(cfg)
    sizes = []
    density = folded.folded_density

    def recording(model, points, *args):
        sizes.append(len(points))
        return density(model, points, *args)

    monkeypatch.setattr(folded, "folded_density", recording)
    out = runner.process(Frame(np.zeros((64, 192, 3), np.uint8), K, 1, "c", None), want_depth=False)
    seen = int((~out.unseen).sum())
    assert 0 < seen < out.density.size
    assert np.isfinite(out.density).all() and not out.density[out.unseen].any()  # the mask says unseen, not NaN
    assert sum(sizes) == seen


@pytest.mark.parametrize("mode", ["sv", "mv"])
def test_reduced_precision_fast_path_keeps_occupancy_of_the_trained_network(mode):
    rng = np.random.default_rng(2)
    images = [(rng.random((96, 320, 3)) * 255).astype(np.uint8) for _ in range(2)]
    Kt = np.array([[250.0, 0, 160], [0, 250, 48], [0, 0, 1]])
    out = {}
    for dtype in ("float32", "bfloat16"):
        cfg = small_config(
            **{
                "model.checkpoint": "",
                "model.image_height": 0,
                "model.image_width": 0,
                "model.dtype": dtype,
                "grid.resolution": 0.2,
                "mode": mode,
            }
        )
        runner = FrameRunner(cfg)
        for i, img in enumerate(images):
            T = np.eye(4)
            T[2, 3] = float(i)
            out[dtype] = runner.process(Frame(img, Kt, i + 1, "c", T))
    assert out["bfloat16"].num_views == (1 if mode == "sv" else 2)
    a, b = out["float32"].density, out["bfloat16"].density
    seen = ~out["float32"].unseen
    assert np.array_equal(seen, ~out["bfloat16"].unseen) and seen.sum() > 10000
    assert np.mean((a[seen] > 0.5) == (b[seen] > 0.5)) >= 0.995
    assert np.nanmedian(np.abs(out["bfloat16"].depth - out["float32"].depth) / out["float32"].depth) < 0.02


def test_grid_cells_placed_with_rounding_noise_reuse_their_kept_terms(monkeypatch):
    """A planner grid placed through a moving odom frame and back moves by rounding noise (about 1e-6 m) every frame:
    its cells' view-0 terms are kept; a grid that moved by a millimetre is projected again."""
    runner = FrameRunner(small_config(mode="sv"))
    stages = runner.stages
    entry = stages.encoding.encode(Frame(np.full((64, 192, 3), 90, np.uint8), K, 1, "cam", None), ("sv",))
    query = Query.of("sv", [entry], stages.device)
    xs, ys, zs = np.meshgrid(np.linspace(-4, 4, 9), np.linspace(-1, 1.5, 5), np.linspace(4, 30, 12), indexing="ij")
    centres = np.stack([xs, ys, zs], -1).astype(np.float32)
    built = []
    terms = folded.view0_terms
    monkeypatch.setattr(folded, "view0_terms", lambda *a: built.append(1) or terms(*a))
    with stages.precision():
        first = stages.field.grid(centres, query)
        noisy = stages.field.grid(centres + np.float32(1e-6), query)
        moved = stages.field.grid(centres + np.float32(1e-3), query)
        assert len(built) == 2  # the noisy grid took the kept terms, the moved one was projected again
        fresh = choose_field(stages.cfg, stages.model, stages.device, stages.input_size).grid(centres + 1e-3, query)
    np.testing.assert_allclose(noisy.density, first.density, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(moved.density, fresh.density, rtol=1e-5, atol=1e-6)
    assert np.array_equal(moved.unseen, fresh.unseen) and (~first.unseen).sum() > 100
