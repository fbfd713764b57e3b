"""Depth hints: SGBM with a left-right check and a plane sweep on analytic scenes, the Depth Hints rule, its loss."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from kdbts_ros.core.model.checkpoint import random_model
from kdbts_ros.core.settings import load_config
from kdbts_ros.data.rig import RigConfig
from kdbts_ros.data.synth_folder import SynthFolder, write_sequence
from kdbts_ros.training import losses
from kdbts_ros.training.config import TrainConfig
from kdbts_ros.training.hints import plane_sweep_hint, stereo_hint
from kdbts_ros.training.objective import Objective
from kdbts_ros.training.samples import RIG, TrainingFrames

W, H = 160, 64
K = np.array([[100.0, 0.0, W / 2], [0.0, 100.0, H / 2], [0.0, 0.0, 1.0]])
TEXELS_PER_M = 40.0


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """Smooth random texture (uint8) covering 20 x 20 m of a plane at TEXELS_PER_M."""
    noise = np.random.default_rng(0).random((800, 800)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), 1.2)
    return cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX)


def render(texture: np.ndarray, T_world_cam: np.ndarray, planes: list[tuple[float, float, float]]) -> np.ndarray:
    """uint8 image of textured fronto-parallel planes z = Z of the world (ref camera) frame, each over x in
    [x0, x1), nearest first hit wins; the texture is indexed by (x, y) on the plane.
    """
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    d = T_world_cam[:3, :3] @ rays
    c = T_world_cam[:3, 3:]
    best = np.full(u.size, np.inf)
    tx, ty = np.zeros(u.size), np.zeros(u.size)
    for Z, x0, x1 in planes:
        s = (Z - c[2]) / d[2]
        p = c + s * d
        hit = (s > 0) & (p[0] >= x0) & (p[0] < x1) & (s < best)
        best = np.where(hit, s, best)
        tx, ty = np.where(hit, p[0], tx), np.where(hit, p[1], ty)
    mx = (tx * TEXELS_PER_M + texture.shape[1] / 2).reshape(H, W).astype(np.float32)
    my = (ty * TEXELS_PER_M + texture.shape[0] / 2).reshape(H, W).astype(np.float32)
    return cv2.remap(texture, mx, my, cv2.INTER_LINEAR).astype(np.uint8)


def pose(x: float = 0.0, z: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    T[0, 3], T[2, 3] = x, z
    return T


BACKGROUND = (8.0, -50.0, 50.0)


def test_sgbm_hints_find_a_plane_at_its_depth(texture):
    left = render(texture, pose(), [BACKGROUND])
    right = render(texture, pose(0.5), [BACKGROUND])
    depth = stereo_hint(left, right, K[0, 0], 0.5, 1.0, 80.0)
    valid = depth > 0
    assert valid.mean() > 0.9
    # 8 m is a disparity of 6.25 px here: SGBM's sub-pixel estimate is off by a few hundredths of a pixel
    assert np.median(np.abs(depth[valid] / 8.0 - 1)) < 0.05
    assert np.mean(np.abs(depth[valid] / 8.0 - 1) < 0.08) > 0.95


def test_the_left_right_check_removes_an_occluded_strip(texture):
    # a near board (3 m, disparity 16.7 px) in front of the background (8 m, 6.25 px): background left of the
    # board is seen by the left camera only, over about 10 px
    board = (3.0, -0.3, 0.6)
    left = render(texture, pose(), [board, BACKGROUND])
    right = render(texture, pose(0.5), [board, BACKGROUND])
    depth = stereo_hint(left, right, K[0, 0], 0.5, 1.0, 80.0)
    board_cols = slice(int(K[0, 2] + 100 * -0.3 / 3.0) + 3, int(K[0, 2] + 100 * 0.6 / 3.0) - 3)
    on_board = depth[:, board_cols][depth[:, board_cols] > 0]
    assert on_board.size > 0.5 * depth[:, board_cols].size and np.median(np.abs(on_board / 3.0 - 1)) < 0.05
    left_edge = int(K[0, 2] + 100 * -0.3 / 3.0)
    occluded = depth[:, left_edge - 9 : left_edge - 1]
    assert (occluded > 0).mean() < 0.2


def test_a_plane_sweep_recovers_a_plane_from_two_posed_views(texture):
    ref = render(texture, pose(), [BACKGROUND])
    # neighbours 0.6 m left and right and 1 m back/ahead (a car driving with some sideways parallax)
    neighbours = []
    for x, z in ((-0.6, -1.0), (0.6, 1.0)):
        T_world_other = pose(x, z)
        neighbours.append((render(texture, T_world_other, [BACKGROUND]), np.linalg.inv(T_world_other)))
    depth = plane_sweep_hint(ref, neighbours, K, 3.0, 80.0)
    valid = depth > 0
    assert valid.mean() > 0.4  # a border as wide as the neighbours' parallax has no match
    assert np.median(np.abs(depth[valid] / 8.0 - 1)) < 0.01


def test_a_plane_sweep_leaves_out_pixels_where_the_neighbours_disagree(texture):
    ref = render(texture, pose(), [BACKGROUND])
    T_a, T_b = pose(-0.6, -1.0), pose(0.6, 1.0)
    moved = (BACKGROUND[0] * 1.5, *BACKGROUND[1:])  # the scene moved away in one neighbour: not static
    neighbours = [
        (render(texture, T_a, [BACKGROUND]), np.linalg.inv(T_a)),
        (render(texture, T_b, [moved]), np.linalg.inv(T_b)),
    ]
    assert (plane_sweep_hint(ref, neighbours, K, 3.0, 80.0) > 0).mean() < 0.05


def test_the_depth_hints_rule_uses_a_hint_only_where_it_reprojects_better(rng):
    gt = torch.as_tensor(rng.random((2, 3, 4, 4)), dtype=torch.float32)
    off = (gt + 0.3).clamp(0, 1)
    none = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    # patch 0: the hint reprojects to the true colours and the network does not; patch 1: the other way round
    hint_err = losses.best_view_error(torch.stack([gt[0], off[1]])[:, None], gt, none)
    net_err = losses.best_view_error(torch.stack([off[0], gt[1]])[:, None], gt, none)
    hint = torch.full((2, 4, 4), 10.0)
    mask = losses.hint_mask(hint, hint_err, net_err)
    assert mask[0].all() and not mask[1].any()
    # no hint (0) or no usable view for the hint: never used
    assert not losses.hint_mask(torch.zeros_like(hint), hint_err, net_err).any()
    assert not losses.hint_mask(hint, torch.full_like(hint_err, float("inf")), net_err).any()


def test_the_hint_loss_is_log_l1_and_its_gradient_lowers_it():
    hint = torch.tensor([10.0, 20.0, 5.0, 40.0])
    mask = torch.tensor([True, True, True, False])
    depth = torch.tensor([5.0, 20.0, 10.0, 1.0], requires_grad=True)
    loss = losses.depth_hint_loss(depth, hint, mask)
    assert loss.item() == pytest.approx(2 * np.log(2) / 3, rel=1e-5)
    loss.backward()
    assert depth.grad is not None and depth.grad[3] == 0 and depth.grad[1] == 0
    optimiser = torch.optim.SGD([depth], lr=10.0)
    before = loss.item()
    for _ in range(20):
        optimiser.zero_grad()
        losses.depth_hint_loss(depth, hint, mask).backward()
        optimiser.step()
    assert losses.depth_hint_loss(depth, hint, mask).item() < 0.5 * before


@pytest.fixture(scope="module")
def tiny_streets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("streets")
    write_sequence(root, 0, 4, RigConfig(width=160, height=64))
    return root


def test_stereo_samples_carry_hints_for_the_forward_pair_that_a_flip_mirrors(tiny_streets):
    folder = SynthFolder(tiny_streets)
    plain = TrainingFrames(folder, side_offset=1, hints=True)
    flipped = TrainingFrames(folder, side_offset=1, flip_lr=1.0, hints=True)
    a, b = plain[0]["hints"], flipped[0]["hints"]
    assert a.shape == (8, 64, 160) and (a[:4] > 0).float().mean() > 0.2 and not a[4:].any()
    # a flip swaps left and right and mirrors: the left hint of the flipped sample is the mirrored right hint
    assert torch.equal(b[0], a[2].flip(-1)) and torch.equal(b[2], a[0].flip(-1))
    # against the exact depth of the procedural street
    depth = folder.depth(folder.sequences[0], 0, 0)
    ok = (a[0].numpy() > 0) & np.isfinite(depth)
    assert np.median(np.abs(a[0].numpy()[ok] / depth[ok] - 1)) < 0.1


def test_the_objective_adds_a_finite_stereo_hint_loss_that_reaches_the_network(tiny_streets):
    cfg = load_config(
        TrainConfig,
        None,
        {
            "data.sources": [f"synth {tiny_streets}"],
            "model.feature_dim": 8,
            "model.mv_hidden": 16,
            "loss.patches": 8,
            "loss.samples": 8,
            "loss.stereo_hints": 1.0,
        },
    )
    frames = TrainingFrames(SynthFolder(tiny_streets), side_offset=1, hints=True)
    batch = {k: v[None] for k, v in frames[0].items()}
    assert int(batch["layout"][0]) == RIG
    model = random_model(cfg.model.architecture(), 0)
    objective = Objective(model, cfg, seed=0)
    out = objective(batch)
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["stereo_hints"])
    assert 0 < float(out["stereo_hints_used"]) <= 1
    out["loss"].backward()
    assert all(p.grad is not None for p in model.heads.singleviewhead.parameters())


def test_the_hints_recipe_continues_the_embedded_default_on_the_same_frames_with_both_hints():
    config = Path(__file__).parents[2] / "config"
    hints = load_config(TrainConfig, config / "train_kdbts_hints.yaml")
    real = load_config(TrainConfig, config / "train_kdbts_real.yaml")
    assert hints.init_checkpoint == "runs/kdbts_real/checkpoint.safetensors"  # train_kdbts_real.yaml's output
    assert hints.data == real.data and hints.model == real.model and hints.method == real.method
    assert hints.loss.stereo_hints > 0 and hints.loss.motion_hints > 0 and hints.threads == 1


def test_the_extra_data_recipe_continues_the_hints_run_and_trains_on_no_held_out_drive():
    config = Path(__file__).parents[2] / "config"
    extra = load_config(TrainConfig, config / "train_kdbts_extra.yaml")
    assert extra.init_checkpoint == "runs/kdbts_hints/checkpoint.safetensors"  # train_kdbts_hints.yaml's output
    roots = [line.split()[1] for line in extra.data.sources]
    assert any("2011_09_26_drive_0005" in r for r in roots) and extra.loss.stereo_hints > 0
    for root in roots:  # reviewers evaluate on these: never trained on
        assert "0052" not in root and "KITTI360" not in root and "2011_09_30" not in root, root
        assert not any(f"2011_09_26_drive_{d}" in root for d in ("0002", "0009", "0013")), root  # Eigen test drives


def test_hints_need_the_photometric_branch():
    with pytest.raises(ValueError, match="frozen"):
        load_config(TrainConfig, None, {"teacher": "frozen", "init_checkpoint": "x", "loss.stereo_hints": 1.0}).check()


def test_crop_padding_shows_frame_0_through_a_narrower_camera_padded_as_the_runtime_pads(tiny_streets):
    folder = SynthFolder(tiny_streets)
    plain = TrainingFrames(folder, side_offset=1, hints=True, seed=3)
    narrow = TrainingFrames(folder, side_offset=1, hints=True, seed=3, crop_padding=1.0)
    widths = []
    for i in (0, 1, 0, 1, 0, 1):  # each draw of a sample picks its own window
        a, b = plain[i], narrow[i]
        seen = b["valid"][0].numpy()
        cols = np.nonzero(seen.all(0))[0]
        x0, x1 = cols[0], cols[-1] + 1
        widths.append(x1 - x0)
        # one window of whole columns: seen inside, unseen outside
        assert seen[:, x0:x1].all() and not seen[:, :x0].any() and not seen[:, x1:].any()
        img, ref = b["images"][0].numpy(), a["images"][0].numpy()
        np.testing.assert_array_equal(img[:, :, x0:x1], ref[:, :, x0:x1])
        # outside, each row repeats the window's edge pixel (the runtime's padding of a narrower camera)
        np.testing.assert_array_equal(img[:, :, :x0], np.repeat(ref[:, :, x0 : x0 + 1], x0, 2))
        np.testing.assert_array_equal(img[:, :, x1:], np.repeat(ref[:, :, x1 - 1 : x1], 160 - x1, 2))
        assert not b["hints"][0].numpy()[~seen].any()
        # the other frames keep their whole view: the colours the loss compares
        np.testing.assert_array_equal(b["images"][1:].numpy(), a["images"][1:].numpy())
        assert b["valid"][1:].all()
    assert min(widths) >= round(0.35 * 160) and len(set(widths)) > 1
