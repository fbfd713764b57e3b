"""Evaluation: metrics against hand-computed values, the protocol's query area, and the evaluator end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import slab_model

from kdbts_ros.commands.cli import main
from kdbts_ros.core.errors import EXIT_USER
from kdbts_ros.core.model.checkpoint import save_checkpoint
from kdbts_ros.data.rig import RigConfig
from kdbts_ros.data.synth_folder import SynthFolder, write_sequence
from kdbts_ros.evaluation.evaluate import EvalSettings, Evaluator
from kdbts_ros.evaluation.metrics import depth_metrics, occupancy_metrics
from kdbts_ros.evaluation.protocol import OccupancyProtocol, visible_from_depth

pytestmark = pytest.mark.integration


def test_depth_metrics_match_hand_computed_values():
    gt = np.array([[2.0, 4.0], [np.inf, 100.0]])  # sky and beyond the 80 m cap are ignored
    pred = np.array([[1.0, 5.0], [3.0, 3.0]])
    m = depth_metrics(gt, pred)
    assert m["abs_rel"] == pytest.approx((0.5 + 0.25) / 2)
    assert m["sq_rel"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert m["rmse"] == pytest.approx(1.0)
    assert m["rmse_log"] == pytest.approx(np.sqrt((np.log(2) ** 2 + np.log(1.25) ** 2) / 2))
    assert (m["a1"], m["a2"], m["a3"]) == (0.0, 0.5, 0.5)  # ratios 2 and 1.25: only 1.25 < 1.25^2, 1.25^3
    # predictions are clamped to the cap before scoring
    assert depth_metrics(np.array([50.0]), np.array([500.0]))["rmse"] == pytest.approx(30.0)
    with pytest.raises(ValueError):
        depth_metrics(np.array([np.inf]), np.array([1.0]))


def test_occupancy_metrics_follow_the_kitti360_definitions():
    occupied = np.array([1, 1, 0, 0, 1, 0], bool)
    visible = np.array([0, 0, 0, 0, 1, 1], bool)  # point 4: occupied but seen, so ground truth says empty
    pred = np.array([1, 0, 1, 0, 0, 0], bool)
    m = occupancy_metrics(pred, occupied, visible)
    # gt = [1, 1, 0, 0, 0, 0]; correct = [1, 0, 0, 1, 1, 1]
    assert m["o_acc"] == pytest.approx(4 / 6)
    assert m["ie_acc"] == pytest.approx(2 / 4)  # invisible points 0..3
    assert m["ie_rec"] == pytest.approx(1 / 2)  # invisible empty: 2, 3; predicted empty: 3
    assert m["o_prec"] == pytest.approx(1 / 2) and m["o_rec"] == pytest.approx(1 / 2)
    assert m["ie_prec"] == pytest.approx(1 / 2)  # invisible predicted empty: 1, 3; truly empty: 3
    assert np.isnan(occupancy_metrics(pred, occupied, np.ones(6, bool))["ie_acc"])


def test_protocol_grid_is_the_official_one():
    pts = OccupancyProtocol().points_cam()
    assert pts.shape == (1, 160, 80, 3)
    assert np.allclose(pts[..., 1], 0.375)
    assert pts[0, 0, 0, 2] == pytest.approx(20.0) and pts[0, -1, 0, 2] == pytest.approx(4.0)
    assert pts[0, 0, 0, 0] == pytest.approx(-4.0) and pts[0, 0, -1, 0] == pytest.approx(4.0)
    tilted = OccupancyProtocol(pitch_deg=5.0).points_cam()
    assert np.allclose(np.linalg.norm(tilted, axis=-1), np.linalg.norm(pts, axis=-1))
    # a point ahead on the level grid is rotated down-forward by the camera's pitch (y down, z forward)
    assert tilted[0, 0, 40, 1] == pytest.approx(
        0.375 * np.cos(np.deg2rad(5)) - pts[0, 0, 40, 2] * np.sin(np.deg2rad(5))
    )


def test_visibility_is_in_front_of_the_surface_at_the_nearest_pixel():
    K = np.array([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]])
    depth = np.full((10, 10), 8.0)
    depth[:, 7:] = 3.0
    pts = np.array([[0, 0, 5.0], [0, 0, 9.0], [1.0, 0, 4.0], [0, 0, -2.0], [10.0, 0, 5.0]])
    # in front; behind; projects to column 7.5 -> 8 (surface at 3 m) so hidden; behind camera; outside
    assert visible_from_depth(pts, depth, K).tolist() == [True, False, False, False, False]


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("held_out")
    write_sequence(root, 7, 4, RigConfig(width=160, height=64))
    return root


def test_evaluator_scores_an_analytic_wall_as_independently_computed(held_out):
    """A network whose density is a wall at camera z = 10 m: depth ~ 10 m everywhere, occupied iff z > 10."""
    settings = EvalSettings(stride=2, pixel_step=4)
    ev = Evaluator(held_out, settings)
    r = ev.run(slab_model(10.0), "sv", progress=False)
    folder = SynthFolder(held_out)
    pts = settings.protocol.points_cam().reshape(-1, 3)
    occ, depth = [], []
    for seq, t in ev.frames.items:
        T = folder.cam_to_world(seq, 0, t)
        gt_depth = folder.depth(seq, 0, t)
        occupied = folder.scene(seq).occupied(pts @ T[:3, :3].T + T[:3, 3])
        # the slab's softplus crosses sigma = 0.5 about 0.05 m behind the wall (gain 1e4 on the inverse-depth code)
        occ.append(occupancy_metrics(pts[:, 2] > 10.05, occupied, visible_from_depth(pts, gt_depth, folder.K)))
        g = gt_depth[::4, ::4]
        g = g[np.isfinite(g) & (g < 80)]
        depth.append(np.sqrt(np.mean((g - 10.0) ** 2)))
    assert r["frames"] == len(ev.frames.items) == 2
    for key in ("o_acc", "ie_acc", "ie_rec"):
        assert r[key] == pytest.approx(np.nanmean([m[key] for m in occ]), abs=1e-9)
    # the wall is found within one sample spacing (about 0.5 m at 10 m with 64 samples)
    assert r["rmse"] == pytest.approx(np.mean(depth), abs=0.6)


def test_eval_command_writes_table_json_and_profiles(held_out, tmp_path):
    model = slab_model(10.0)
    model.available_heads = ["sv"]
    save_checkpoint(tmp_path / "wall.safetensors", model)
    out = tmp_path / "eval"
    ckpt = str(tmp_path / "wall.safetensors")
    assert main(["eval", str(held_out), "--model", f"WALL={ckpt}", ckpt, "--out", str(out), "--stride", "3"]) == 0
    table = (out / "results.md").read_text().splitlines()
    assert table[0].startswith("| model | O_acc") and table[2].startswith("| WALL (SV) |")
    data = json.loads((out / "results.json").read_text())
    assert set(data["results"]) == {"WALL (SV)", "wall (SV)"} and data["frames"] == 1
    assert data["models"] == {"WALL": ckpt, "wall": ckpt}  # unlabelled: named after the file
    # one checkpoint under two names: the same scores, in the JSON and in both table rows
    wall = data["results"]["WALL (SV)"]
    assert data["results"]["wall (SV)"] == pytest.approx(wall, rel=0, abs=0, nan_ok=True)
    assert table[3].startswith("| wall (SV) |") and table[2][len("| WALL") :] == table[3][len("| wall") :]
    assert f" {wall['o_acc']:.3f} |" in table[2] and f" {wall['abs_rel']:.3f} |" in table[2]
    assert (out / "profiles.png").stat().st_size > 1000
    missing = str(tmp_path / "missing.safetensors")
    assert main(["eval", str(held_out), "--model", missing, "--out", str(out)]) == EXIT_USER
