"""Training: losses against analytic cases, sample geometry, a short run, distillation and DDP."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import KITTI_SAMPLE, needs_kitti, write_odometry

from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.lens import CanonicalCamera, Lens
from kdbts_ros.core.model.checkpoint import load_checkpoint, random_model
from kdbts_ros.core.model.network import Views, to_grey
from kdbts_ros.core.settings import load_config
from kdbts_ros.core.stages import Stages
from kdbts_ros.data.rig import RigConfig
from kdbts_ros.data.synth_folder import SynthFolder, write_sequence
from kdbts_ros.training import losses
from kdbts_ros.training.config import TrainConfig, TrainDataConfig, parse_source
from kdbts_ros.training.objective import Objective, pixel_rays
from kdbts_ros.training.samples import (
    MONO,
    RIG,
    MixedFrames,
    SourceBatches,
    TrainingFrames,
    frame_split,
    loss_render_split,
    seed_worker,
)
from kdbts_ros.training.trainer import build_dataset, source_frames, train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Two short procedural sequences at 160x64 (small, yet 2 pixels tall after the encoder's 32x downsampling)."""
    root = tmp_path_factory.mktemp("synth")
    for seed in (0, 1):
        write_sequence(root, seed, 6, RigConfig(width=160, height=64))
    return root


def tiny_config(root: Path, **overrides) -> TrainConfig:
    """A few-second training setup on the tiny data."""
    values = {
        "data.sources": [f"synth {root}"],
        "data.side_offset": 2,
        "data.colour_jitter": 0.0,
        "model.feature_dim": 8,
        "model.mv_hidden": 16,
        "loss.patches": 4,
        "loss.samples": 8,
        "iterations": 4,
        "batch_size": 1,
        "log_every": 1,
        "checkpoint_every": 2,
        "threads": 1,
    }
    values.update(overrides)
    return load_config(TrainConfig, None, values)


# ---- losses --------------------------------------------------------------------------------------


def test_ssim_error_is_zero_for_identical_images_and_grows_with_noise(rng):
    x = torch.as_tensor(rng.random((2, 3, 8, 8)), dtype=torch.float32)
    assert losses.ssim_error(x, x).abs().max() < 1e-6
    noisy = (x + 0.3 * torch.as_tensor(rng.standard_normal(x.shape), dtype=torch.float32)).clamp(0, 1)
    assert losses.ssim_error(x, noisy).mean() > 0.05


def test_photometric_loss_takes_the_best_usable_view():
    gt = torch.full((1, 3, 4, 4), 0.5)
    good, bad = gt + 0.1, gt + 0.4
    err_good, err_bad = (losses.patch_photometric_error(x, gt).mean().item() for x in (good, bad))
    assert 0 < err_good < err_bad
    pred = torch.stack([bad, good], 1)
    loss, best = losses.photometric_loss(pred, gt, torch.zeros(1, 2, 4, 4, dtype=torch.bool))
    assert loss.item() == pytest.approx(err_good, abs=1e-6) and torch.isfinite(best).all()
    # the good view unusable everywhere: only the bad one remains; nothing usable: ignored
    only_bad, _ = losses.photometric_loss(pred, gt, torch.tensor([False, True]).view(1, 2, 1, 1).expand(1, 2, 4, 4))
    assert only_bad.item() == pytest.approx(err_bad, abs=1e-6)
    none, best = losses.photometric_loss(pred, gt, torch.ones(1, 2, 4, 4, dtype=torch.bool))
    assert none.item() == 0.0 and not torch.isfinite(best).any()


def test_weight_guided_invalid_uses_the_weight_mass_on_invalid_samples():
    w = torch.tensor([[0.05, 0.95], [0.5, 0.5]])
    invalid = torch.tensor([[[False, True], [True, False]], [[True, True], [False, True]]])  # (R, S, V)
    # ray 0: view 0 invalid mass 0.95 > 0.9, view 1 0.05; ray 1: view 0 0.5, view 1 1.0
    assert losses.weight_guided_invalid(w, invalid).tolist() == [[True, False], [False, True]]


def test_edge_aware_smoothness_is_zero_for_constant_depth_and_damped_at_image_edges():
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    img = torch.zeros(1, 3, 4, 4)
    assert losses.edge_aware_smoothness(torch.full((1, 4, 4), 7.0), img, mask) == 0
    step = torch.full((1, 4, 4), 5.0)
    step[..., 2:] = 10.0
    flat = losses.edge_aware_smoothness(step, img, mask)
    edge_img = img.clone()
    edge_img[..., 2:] = 1.0  # an image edge where the depth steps
    assert losses.edge_aware_smoothness(step, edge_img, mask) < 0.5 * flat


def test_kd_loss_is_l1_on_clipped_densities_and_never_trains_the_teacher():
    s = torch.tensor([0.0, 5.0, -3.0], requires_grad=True)
    t = torch.tensor([1.0, 9.0, 2.0], requires_grad=True)
    loss = losses.kd_density_loss(s, t, torch.tensor([True, True, False]))
    sp = torch.nn.functional.softplus
    expected = (abs(sp(torch.tensor(0.0)) - sp(torch.tensor(1.0))) + abs(2.0 - 2.0)) / 2
    assert loss.item() == pytest.approx(float(expected), abs=1e-6)
    loss.backward()
    assert t.grad is None and s.grad[0] != 0 and s.grad[2] == 0


def test_gaussian_kl_and_cross_view_pseudo_depth():
    assert losses.gaussian_kl(torch.tensor(2.0), torch.tensor(0.5), torch.tensor(2.0), torch.tensor(0.5)) == 0
    kl = losses.gaussian_kl(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(1.0), torch.tensor(2.0))
    assert kl.item() == pytest.approx(np.log(2) + (1 + 1) / 8 - 0.5, abs=1e-6)
    d = torch.tensor([[10.0, 10.0], [10.2, 20.0]])  # ray 0 agrees across views, ray 1 does not
    mu, sigma, keep = losses.cross_view_pseudo_depth(d, 0.05, 0.02)
    assert keep.tolist() == [True, False]
    assert mu[0].item() == pytest.approx(10.1) and sigma[0].item() == pytest.approx(max(0.1, 0.02 * 10.1))


def test_probabilistic_kd_prefers_the_student_whose_rays_end_at_the_pseudo_depth():
    t = torch.tensor([[5.0, 10.0, 20.0]])
    near, right = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    args = (t, torch.tensor([10.0]), torch.tensor([1.0]), torch.tensor([True]))
    assert losses.probabilistic_kd_loss(right, *args) < losses.probabilistic_kd_loss(near, *args)


# ---- samples and rays ----------------------------------------------------------------------------


def test_loss_render_split_alternates_across_cameras():
    assert loss_render_split(8, False) == ([0, 3, 4, 7], [1, 2, 5, 6])
    assert loss_render_split(8, True) == ([1, 2, 5, 6], [0, 3, 4, 7])


def test_pixel_rays_hit_the_pixel_they_start_from():
    Kn = torch.tensor([[0.8, 0, -0.03], [0, 2.9, 0.27], [0, 0, 1.0]])
    rows, cols = torch.tensor([0, 5, 31]), torch.tensor([0, 40, 95])
    d = pixel_rays(rows, cols, Kn, 32, 96)
    xy = (d @ Kn.T)[:, :2]
    # align_corners=False: pixel i's centre sits at (2 i + 1) / size - 1
    assert torch.allclose(xy[:, 0], (2 * cols + 1) / 96 - 1, atol=1e-6)
    assert torch.allclose(xy[:, 1], (2 * rows + 1) / 32 - 1, atol=1e-6)


@pytest.mark.parametrize("flip", [False, True])
def test_samples_are_posed_relative_to_frame_0_and_a_flip_mirrors_consistently(tiny_data, flip):
    frames = TrainingFrames(SynthFolder(tiny_data), side_offset=2, flip_lr=float(flip))
    s = frames[0]
    assert s["images"].shape == (8, 3, 64, 160) and bool(s["flip"]) is flip
    assert torch.allclose(s["T_ref"][0], torch.eye(4), atol=1e-5)
    # the other stereo camera at t sits 0.6 m to the right of frame 0 in both cases
    assert torch.allclose(s["T_ref"][2][:3, 3], torch.tensor([0.6, 0.0, 0.0]), atol=1e-4)
    # a ground point seen in frame 0 projects to the same colour in frame 2 (frames agree geometrically)
    folder = SynthFolder(tiny_data)
    seq, t = frames.items[0]
    depth = folder.depth(seq, 1 if flip else 0, t)
    v, u = 60, 40
    if flip:
        depth = depth[:, ::-1]
    Kn = s["Kn"][0]
    p = pixel_rays(torch.tensor(v), torch.tensor(u), Kn, 64, 160) * float(depth[v, u])
    q = torch.linalg.inv(s["T_ref"][2]) @ torch.cat([p, torch.ones(1)])
    xy = (Kn @ q[:3])[:2] / q[2]
    col = ((xy[0] + 1) * 160 - 1) / 2
    assert 0 <= col < 160 and abs(float(xy[1]) - (2 * v + 1) / 64 + 1) < 0.02  # same row: rectified stereo
    img0, img2 = s["images"][0][:, v, u], s["images"][2][:, v, round(float(col))]
    assert torch.allclose(img0, img2, atol=0.08)


# ---- training ------------------------------------------------------------------------------------


def _photometric_on_fixed_rays(model, cfg, batch) -> float:
    with torch.no_grad():
        return float(Objective(model, cfg, seed=123)(batch)["photometric"])


def test_a_short_training_run_lowers_the_photometric_loss(tiny_data, tmp_path):
    # lr 1e-3: at 2e-3 this 40-step run diverged on an AMD EPYC (loss 0.065 -> 0.094) while it converged elsewhere
    cfg = tiny_config(tiny_data, method="bts", iterations=40, lr=1e-3, **{"data.flip_lr": 0.0})
    batch = {k: v[None] for k, v in build_dataset(cfg, 0)[0].items()}
    before = _photometric_on_fixed_rays(random_model(cfg.model.architecture(), cfg.seed), cfg, batch)
    model = train(cfg, tmp_path / "run", progress=False)
    after = _photometric_on_fixed_rays(model, cfg, batch)
    assert after < 0.8 * before
    # the run left a loadable checkpoint with the trained head and a log
    loaded, info = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert loaded.available_heads == ["sv"] and info["method"] == "bts" and info["step"] == 40
    # trained in the first source's camera, as recorded
    folder = SynthFolder(tiny_data)
    assert info["camera"] == CanonicalCamera.of(Lens.pinhole(folder.K, 160, 64), 160, 64).record()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 40


def test_a_checkpoint_states_its_training_camera_and_the_runtime_sees_through_it(tiny_data, tmp_path):
    # a training camera wider than the synthetic rig's: every frame is resampled into it, its rim is padding
    cfg = tiny_config(
        tiny_data, method="bts", iterations=1, **{"data.width": 96, "data.height": 48, "data.camera": "0.9 1.6 0.1 0"}
    )
    camera = CanonicalCamera.from_normalised((0.9, 1.6, 0.1, 0.0), 96, 48)
    sample = build_dataset(cfg, 0)[0]
    assert tuple(sample["images"].shape[-2:]) == (48, 96)
    np.testing.assert_allclose(sample["Kn"][0].numpy(), camera.Kn, atol=1e-7)
    # a pixel is seen where its ray (network convention) lands on the rig camera's image
    K = SynthFolder(tiny_data).K
    v, u = np.mgrid[0:48, 0:96]
    x, y = ((2 * u + 1) / 96 - 1 - 0.1) / 0.9, ((2 * v + 1) / 48 - 1) / 1.6
    pu, pv = K[0, 0] * x + K[0, 2], K[1, 1] * y + K[1, 2]
    inside = (pu >= -0.5) & (pu <= 159.5) & (pv >= -0.5) & (pv <= 63.5)
    assert 0.3 < inside.mean() < 0.95
    assert (sample["valid"].numpy() == inside).mean() > 0.995  # pixels exactly on the edge may round either way
    train(cfg, tmp_path / "run", progress=False)
    _, info = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert info["camera"] == camera.record() and (info["image_width"], info["image_height"]) == (96, 48)
    stages = Stages(
        load_config(PipelineConfig, None, {"model.checkpoint": str(tmp_path / "run/checkpoint.safetensors")})
    )
    assert stages.canonical == camera


def test_no_loss_is_taken_on_padding(tiny_data):
    cfg = tiny_config(tiny_data, method="bts")
    batch = {k: v[None] for k, v in build_dataset(cfg, 0)[0].items()}
    model = random_model(cfg.model.architecture(), cfg.seed)
    with torch.no_grad():
        seen = Objective(model, cfg, seed=5)(batch)
        batch["valid"] = torch.zeros_like(batch["valid"])
        padded = Objective(model, cfg, seed=5)(batch)
    assert float(seen["usable_rays"]) > 0.25
    assert float(padded["usable_rays"]) == 0.0 and float(padded["photometric"]) == 0.0


def test_points_seen_in_a_views_padding_are_flagged():
    cfg = tiny_config(Path("unused"), method="bts")
    objective = Objective(random_model(cfg.model.architecture(), 0), cfg, seed=0)
    valid = torch.ones(1, 1, 4, 8, dtype=torch.bool)
    valid[..., 6:] = False  # the two right columns are padding
    Kn = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1]])[None, None]
    # normalised x of column i: (2 i + 1) / 8 - 1; points at x = -0.5 (between columns 1 and 2), 0.125 (column 4),
    # 0.5 (between 5 and 6: it blends the padding in), 0.875 (column 7)
    points = torch.tensor([[[-0.5, 0.0, 1.0], [0.125, 0.0, 1.0], [0.5, 0.0, 1.0], [0.875, 0.0, 1.0]]])
    flagged = objective._in_padding(points, valid, Kn, torch.eye(4)[None, None])
    assert flagged[0, :, 0].tolist() == [False, False, True, True]


def test_resume_continues_from_the_saved_step(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, method="mvbts", iterations=6)
    train(cfg, tmp_path / "whole", progress=False)
    cfg.iterations = 3
    train(cfg, tmp_path, progress=False)
    cfg.iterations = 6
    train(cfg, tmp_path, progress=False)

    def steps() -> list[int]:
        return [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]

    assert steps() == [1, 2, 3, 4, 5, 6]
    # the same batches, augmentations and random draws as the run that never stopped: the same losses
    whole = [json.loads(line)["loss"] for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == whole
    cfg.iterations = 2
    train(cfg, tmp_path, resume=False, progress=False)  # --restart: a fresh log too
    assert steps() == [1, 2]


def test_a_run_resumes_from_a_checkpoints_compact_state_as_from_its_full_state(tiny_data, tmp_path):
    """Without state.pt (too big to commit) a checkpoint resumes the run: step 4's loss, computed from the weights
    after step 3 on step 4's batch and random draws, is the uninterrupted run's; Adam's moments then start again."""
    cfg = tiny_config(tiny_data, method="mvbts", iterations=6)
    train(cfg, tmp_path / "whole", progress=False)
    cfg.iterations = 3
    train(cfg, tmp_path / "cut", progress=False)
    committed = tmp_path / "committed.safetensors"
    (tmp_path / "cut" / "checkpoint.safetensors").rename(committed)
    (tmp_path / "cut" / "state.pt").unlink()
    cfg.iterations = 6
    train(cfg, tmp_path / "cut", progress=False, resume_from=committed)

    def records(run: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    whole, cut = records("whole"), records("cut")
    assert [r["step"] for r in cut] == [1, 2, 3, 4, 5, 6]
    assert cut[3]["loss"] == whole[3]["loss"] and cut[3]["lr"] == whole[3]["lr"]
    assert cut[4]["loss"] != whole[4]["loss"]  # the optimiser's moments did start again
    _, info = load_checkpoint(tmp_path / "cut" / "checkpoint.safetensors")
    assert info["resume"]["step"] == 6 and len(json.dumps(info["resume"])) < 20_000


def test_frozen_teacher_distillation_trains_only_the_student(tiny_data, tmp_path):
    teacher_cfg = tiny_config(tiny_data, method="mvbts", iterations=2)
    train(teacher_cfg, tmp_path / "teacher", progress=False)
    ckpt = tmp_path / "teacher" / "checkpoint.safetensors"
    teacher, _ = load_checkpoint(ckpt)
    cfg = tiny_config(tiny_data, method="kdbts", teacher="frozen", init_checkpoint=str(ckpt), iterations=3, lr=1e-2)
    student = train(cfg, tmp_path / "kd", progress=False)
    before, after = teacher.state_dict(), student.state_dict()
    for key, value in after.items():
        if key.startswith("heads.singleviewhead."):
            continue
        assert torch.equal(value, before[key]), key  # encoder, BN statistics, MV head untouched
    assert not torch.equal(after["heads.singleviewhead.lin_out.weight"], before["heads.singleviewhead.lin_out.weight"])
    assert student.available_heads == ["sv", "mv"]


def test_joint_distillation_sends_no_kd_gradient_into_the_teacher_head(tiny_data):
    cfg = tiny_config(tiny_data, method="kdbts")
    model = random_model(cfg.model.architecture(), 0)
    s = build_dataset(cfg, 0)[0]
    pts = torch.rand(1, 200, 3) * torch.tensor([8.0, 2.0, 20.0]) + torch.tensor([-4.0, -1.0, 3.0])

    def kd_loss() -> torch.Tensor:
        views = Views(model.encode(s["images"][:3])[None], s["Kn"][None, :3], torch.linalg.inv(s["T_ref"][:3])[None])
        logits, invalid = model.head_logits(pts, views, ("sv", "mv"))
        return losses.kd_density_loss(logits["sv"], logits["mv"], ~invalid[..., 0])

    kd = kd_loss()
    names, params = zip(*model.named_parameters())
    grads = dict(zip(names, torch.autograd.grad(kd, params, allow_unused=True)))
    assert all(grads[n] is None for n in names if n.startswith("heads.multiviewhead3."))
    assert torch.count_nonzero(grads["heads.singleviewhead.lin_out.weight"]) > 0
    # the student's gradient reaches the shared encoder (the authors' joint KD run trains it too) ...
    g = grads["encoder.encoder.encoder.conv1.weight"]
    assert torch.isfinite(g).all() and torch.count_nonzero(g) > 0.9 * g.numel()
    # ... and is the KD loss's: a small step against it lowers the loss by about step * |g|^2 (to first
    # order; ReLU kinks and the L1 make the measured drop 0.7-1.25 of that over random query points)
    conv1 = dict(model.named_parameters())["encoder.encoder.encoder.conv1.weight"]
    step = 1e-3 * kd.item() / float(g.norm()) ** 2
    with torch.no_grad():
        conv1 -= step * g
        drop = kd.item() - kd_loss().item()
    assert 0.5 < drop / (step * float(g.norm()) ** 2) < 1.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    cfg = tiny_config(Path(root), method="mvbts", iterations=3, device="cpu")
    model = train(cfg, Path(out), progress=False)
    torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_ddp_ends_with_identical_parameters(tiny_data, tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tiny_data), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = random_model(tiny_config(tiny_data).model.architecture(), 0).state_dict()
    trained = [k for k in a if k.startswith("heads.multiviewhead3.")]
    for key in a:
        assert torch.equal(a[key], b[key]) or "running" in key or "num_batches" in key, key
    assert any(not torch.equal(a[k], init[k]) for k in trained)  # it did train


def test_kd_mvs_options_add_finite_terms_that_reach_the_student(tiny_data):
    cfg = tiny_config(tiny_data, method="kdbts", **{"loss.featuremetric": 0.1, "loss.prob_kd": 0.1})
    model = random_model(cfg.model.architecture(), 0)
    batch = {k: v[None] for k, v in build_dataset(cfg, 0)[0].items()}
    out = Objective(model, cfg, seed=3)(batch)
    assert all(torch.isfinite(out[k]) for k in ("featuremetric", "prob_kd", "kd", "photometric"))
    assert out["featuremetric"] > 0 and out["prob_kd"] > 0
    # the same rays without the options: the loss differs by exactly the two weighted terms ...
    plain = Objective(model, tiny_config(tiny_data, method="kdbts"), seed=3)(batch)
    assert "featuremetric" not in plain and "prob_kd" not in plain
    assert out["loss"].item() == pytest.approx(
        plain["loss"].item() + 0.1 * out["featuremetric"].item() + 0.1 * out["prob_kd"].item(), rel=1e-5
    )
    # ... and they change the student's gradient
    student = model.heads["singleviewhead"].lin_out.weight
    (g,), (g_plain,) = (torch.autograd.grad(o["loss"], student) for o in (out, plain))
    assert torch.count_nonzero(g) > 0 and not torch.allclose(g, g_plain)


@pytest.mark.parametrize("name", ["bts", "mvbts", "kdbts"])
def test_shipped_training_configs_load_and_describe_the_benchmark(name):
    cfg = load_config(TrainConfig, Path(__file__).parents[2] / "config" / f"train_{name}_synth.yaml")
    assert cfg.method == name and [s.root for s in cfg.data.parsed_sources()] == ["data/synth_train"]
    assert cfg.model.architecture().backbone == "resnet18_half"


def test_the_real_recipe_trains_on_shared_kitti_odometry_and_procedural_streets_never_on_held_out_drives():
    cfg = load_config(TrainConfig, Path(__file__).parents[2] / "config" / "train_kdbts_real.yaml")
    sources = cfg.data.parsed_sources()
    assert cfg.method == "kdbts" and cfg.model.grey_input
    assert {s.format for s in sources} == {"odometry", "synth"} and {s.layout for s in sources} == {"mono", "rig"}
    # the evaluation drives (KITTI raw 0052, KITTI-360) are never trained on
    assert not any("2011_09_26" in s.root or "KITTI360" in s.root for s in sources)


def test_training_config_refuses_inconsistent_settings():
    with pytest.raises(ValueError, match="init_checkpoint"):
        load_config(TrainConfig, None, {"method": "kdbts", "teacher": "frozen"})
    with pytest.raises(ValueError, match="prob_kd"):
        load_config(TrainConfig, None, {"method": "mvbts", "loss.prob_kd": 0.1})
    with pytest.raises(ValueError, match="method"):
        load_config(TrainConfig, None, {"method": "nerf"})


# ---- real recordings: layouts, splits, mixing ----------------------------------------------------


class FakeFrames:
    """A PosedFrames of ``cams`` cameras along camera z: frame f of camera c is filled with 10 f + c."""

    def __init__(self, z: list[float], cams: int = 1, size: tuple[int, int] = (8, 4)):
        self.width, self.height = size
        self.camera = CanonicalCamera.from_normalised((1.0, 2.0, 0.0, 0.0), *size)
        self.cameras, self.sequences, self.z = [f"c{i}" for i in range(cams)], ["s"], z

    def valid(self, seq: str, cam: int) -> np.ndarray:
        valid = np.ones((self.height, self.width), bool)
        valid[:, -1] = False  # the last column is padding
        return valid

    def num_frames(self, seq: str) -> int:
        return len(self.z)

    def image(self, seq: str, cam: int, frame: int) -> np.ndarray:
        img = np.zeros((self.height, self.width, 3), np.uint8)
        img[..., 0], img[..., 1] = 10 * frame + cam, np.arange(self.width)  # green: the column, to see mirroring
        return img

    def cam_to_world(self, seq: str, cam: int, frame: int) -> np.ndarray:
        T = np.eye(4)
        T[:3, 3] = [0.5 * cam, 0.0, self.z[frame]]
        return T


def test_mono_samples_are_t_then_its_neighbours_and_skip_a_standing_vehicle():
    z = [0.0, 1.0, 2.0, 2.05, 2.1, 3.0, 4.0]  # frames 2-4 crawl 5 cm per frame
    frames = TrainingFrames(FakeFrames(z), 0, layout="mono", min_motion=0.3)
    assert [t for _, t in frames.items] == [1, 5]
    s = frames[1]
    assert s["images"].shape == (3, 3, 4, 8) and int(s["layout"]) == MONO
    assert [round(float(v) * 255) // 10 for v in s["images"][:, 0, 0, 0]] == [5, 4, 6]
    np.testing.assert_allclose(s["T_ref"][:, 2, 3], [0.0, z[4] - z[5], z[6] - z[5]], atol=1e-6)


def test_a_flip_swaps_only_complete_camera_pairs():
    frames = TrainingFrames(FakeFrames([0.0, 1.0, 2.0], cams=3), 1, max_cameras=3)
    assert [c for c, _ in frames.frame_ids(True)] == [1, 1, 0, 0, 2, 2]  # camera 2 has no partner
    assert frames.frame_ids(True)[4:] == [(2, 1), (2, 2)]
    frames.flip_lr = 1.0
    s = frames[0]
    assert float(s["images"][0, 1, 0, 0]) == pytest.approx(7 / 255)  # mirrored: the last column comes first
    assert not s["valid"][:, :, 0].any() and s["valid"][:, :, 1:].all()  # and so does its padding


def test_frame_split_follows_the_official_loaders():
    g = torch.Generator().manual_seed(0)
    assert frame_split(MONO, 3, g) == ([0], [1, 2])
    assert frame_split(RIG, 8, g) in (([0, 3, 4, 7], [1, 2, 5, 6]), ([1, 2, 5, 6], [0, 3, 4, 7]))
    # a stereo pair alone: 2 random render frames of 4, the rest loss frames; all 6 choices occur
    seen = set()
    for _ in range(200):
        loss, render = frame_split(RIG, 4, g)
        assert len(render) == 2 and sorted(loss + render) == [0, 1, 2, 3]
        seen.add(tuple(render))
    assert len(seen) == 6


def test_batches_come_from_one_source_at_a_time_in_proportion_to_the_weights():
    mono = TrainingFrames(FakeFrames([float(i) for i in range(12)]), 0, layout="mono")
    rig = TrainingFrames(FakeFrames([float(i) for i in range(12)], cams=2), 0)
    data = MixedFrames([mono, rig], [3.0, 1.0])
    batches = SourceBatches(data, 2, torch.Generator().manual_seed(0))
    counts = [0, 0]
    for _ in range(50):
        for batch in batches:
            k = {int(np.searchsorted(data.offsets, i, side="right")) - 1 for i in batch}
            assert len(k) == 1 and len(batch) == 2
            counts[k.pop()] += 1
    share = counts[0] / sum(counts)
    assert abs(share - 0.75) < 0.05, counts
    layouts = {int(data[i]["layout"]) for i in range(len(data))}
    assert layouts == {MONO, RIG}


def test_data_loader_workers_draw_different_augmentations():
    frames = TrainingFrames(FakeFrames([float(i) for i in range(40)], cams=2), 0, flip_lr=0.5)
    data = MixedFrames([frames], [1.0])
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=None,
        sampler=[0] * 40,
        num_workers=2,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(0),
    )
    flips = [bool(s["flip"]) for s in loader]
    # workers take alternate items: without their own seeds both would draw the same flips
    assert flips[0::2] != flips[1::2]


def test_grey_samples_and_grey_input_networks_see_colour_as_luma():
    frames = TrainingFrames(FakeFrames([0.0, 1.0, 2.0], cams=2), 0, grey=1.0)
    img = frames[0]["images"]
    assert torch.equal(img[:, 0], img[:, 1]) and torch.equal(img[:, 1], img[:, 2])
    expected = 0.299 * 10 / 255 * 0 + 0.587 * torch.arange(8.0) / 255  # frame 0, camera 0: red 0
    assert torch.allclose(img[0, 0, 0], expected, atol=1e-6)
    arch = dataclasses.replace(random_model(TrainConfig().model.architecture(), 0).arch, feature_dim=8, grey_input=True)
    model = random_model(arch, 0).eval()
    colour = torch.rand(1, 3, 64, 96)
    assert torch.allclose(model.encode(colour), model.encode(to_grey(colour)), atol=1e-6)
    assert not torch.allclose(
        random_model(dataclasses.replace(arch, grey_input=False), 0).eval().encode(colour),
        model.encode(colour),
        atol=1e-3,
    )


def test_training_rays_have_unit_length_so_t_is_the_distance_along_the_ray(tiny_data):
    cfg = tiny_config(tiny_data)
    s = build_dataset(cfg, 0)[0]
    obj = Objective(random_model(cfg.model.architecture(), 0), cfg, seed=0)
    rays = obj.sample_rays(
        s["images"][None], s["valid"][None], s["Kn"][None], s["T_ref"][None], [0]
    )  # frame 0: identity
    pts = rays.points.view(-1, cfg.loss.samples, 3)
    assert torch.allclose(pts.norm(dim=-1), rays.t, rtol=1e-5)
    assert float((pts[..., 2] / rays.t).min()) < 0.95  # off-axis rays: z is shorter than the distance


def test_point_view_dropout_hides_extra_views_from_the_multi_view_head_only(tiny_data):
    cfg = tiny_config(tiny_data, method="kdbts")
    model = random_model(cfg.model.architecture(), 0)
    s = build_dataset(cfg, 0)[0]
    views = Views(model.encode(s["images"][:3])[None], s["Kn"][None, :3], torch.linalg.inv(s["T_ref"][:3])[None])
    pts = torch.rand(1, 50, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor(
        [8.0, 2.0, 20.0]
    ) + torch.tensor([-4.0, -1.0, 3.0])
    hide_all = torch.ones(1, 50, 3, dtype=torch.bool)
    hide_all[..., 0] = False
    hidden, _ = model.head_logits(pts, views, ("sv", "mv"), hide_all)
    alone, _ = model.head_logits(pts, views.subset([0]), ("sv", "mv"))
    full, invalid = model.head_logits(pts, views, ("sv", "mv"))
    seen = ~invalid[0, :, 0]  # a point outside view 0 falls back to all views, hidden or not
    assert seen.sum() > 10
    assert torch.allclose(hidden["mv"][0, seen], alone["mv"][0, seen], atol=1e-5)
    assert torch.equal(hidden["sv"], full["sv"])
    assert not torch.allclose(full["mv"][0, seen], alone["mv"][0, seen], atol=1e-4)
    obj = Objective(model, cfg, seed=0)
    drawn = obj.hidden_views((1, 4000), 3, torch.device("cpu"))
    assert not drawn[..., 0].any() and abs(float(drawn[..., 1:].float().mean()) - 0.5) < 0.03
    obj.eval()
    assert obj.hidden_views((1, 10), 3, torch.device("cpu")) is None  # no dropout outside training


def test_source_lines_are_validated_like_every_other_setting():
    src = parse_source("odometry data/seq/07 layout=mono weight=2.5")
    assert (src.format, src.root, src.layout, src.weight) == ("odometry", "data/seq/07", "mono", 2.5)
    for bad, match in (
        ("odometry", "FORMAT ROOT"),
        ("nerf x", "format"),
        ("synth x layout=stereo", "layout"),
        ("synth x weight=-1", "weight"),
        ("synth x cameras", "key=value"),
        ("synth x colour=1", "unknown"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_source(bad)
    with pytest.raises(ValueError, match="layout"):
        load_config(TrainConfig, None, {"data.sources": ["synth x layout=stereo"]})


def test_a_mono_odometry_sequence_trains_beside_procedural_streets(tiny_data, tmp_path):
    seq, _ = write_odometry(tmp_path, n=6)
    cfg = tiny_config(
        tiny_data,
        method="kdbts",
        iterations=3,
        **{
            "data.sources": [f"odometry {seq} cameras=image_0 layout=mono weight=1", f"synth {tiny_data} weight=1"],
            "data.width": 160,
            "data.height": 64,
            "data.grey": 0.5,
        },
    )
    data = build_dataset(cfg, 0)
    assert [len(s) for s in data.sources] == [4, 2 * (6 - 3)]  # mono: t in 1..4; rig: 6 frames, side offset 2
    sample = data.sources[0][0]
    assert tuple(sample["images"].shape) == (3, 3, 64, 160)  # grey 32x16 frames resized, repeated to RGB
    model = train(cfg, tmp_path / "run", progress=False)
    assert model.available_heads == ["sv", "mv"]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [m["step"] for m in logged] == [1, 2, 3] and all(np.isfinite(m["loss"]) for m in logged)


@needs_kitti
def test_a_full_kitti_raw_drive_trains_on_its_colour_pair(tmp_path):
    calib = KITTI_SAMPLE / "python_camera_library/test_data/kitti/2011_09_26_calib/2011_09_26"
    drive = tmp_path / "2011_09_26" / "2011_09_26_drive_0001_sync"
    for cam in ("image_00", "image_01", "image_02", "image_03"):
        (drive / cam / "data").mkdir(parents=True)
        for i in range(3):
            # each file's grey level names it: 10 x camera number + frame
            image = np.full((375, 1242, 3), 10 * int(cam[-1]) + i, np.uint8)
            cv2.imwrite(str(drive / cam / "data" / f"{i:010d}.png"), image)
    poses = tmp_path / "poses.txt"
    np.savetxt(poses, np.tile(np.eye(4)[:3].ravel(), (3, 1)))
    data = TrainDataConfig(width=192, height=64)
    frames = source_frames(parse_source(f"raw {drive} calib={calib} poses={poses}"), data, None)
    assert frames.cameras == ["image_02", "image_03"]
    # a sample reads the colour pair's files (never the grey cameras'), resized, with the rig's 0.54 m baseline
    sample = TrainingFrames(frames, side_offset=1)[0]
    assert tuple(sample["images"].shape) == (4, 3, 64, 192)
    assert [round(float(v) * 255) for v in sample["images"][:, 0, 0, 0]] == [20, 21, 30, 31]
    np.testing.assert_allclose(sample["T_ref"][2, :3, 3].numpy(), [0.54, 0.0, 0.0], atol=0.01)
