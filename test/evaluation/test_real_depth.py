"""Depth evaluation on real frames: velodyne ground truth, the Garg crop, and metrics of a known wall."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import KITTI_SAMPLE, needs_kitti, raw_drive_eval_args, slab_model

from kdbts_ros.commands.cli import main
from kdbts_ros.core.lens import KITTI_RAW, CanonicalCamera
from kdbts_ros.data import shared_sample
from kdbts_ros.evaluation.metrics import depth_metrics
from kdbts_ros.evaluation.real_depth import RealDepthEvaluator, RealDepthSettings, crop_mask, velodyne_depth

pytestmark = pytest.mark.integration


def test_velodyne_depth_keeps_the_nearest_return_per_pixel():
    K = np.array([[10.0, 0, 4], [0, 10.0, 3], [0, 0, 1]])
    T = np.eye(4)
    T[2, 3] = 1.0  # the camera sits 1 m behind the scanner
    pts = np.array(
        [
            [0.0, 0, 4, 0.1],  # pixel (4, 3), z 5
            [0.0, 0, 9, 0.1],  # the same pixel farther: hidden
            [0.3, 0.2, 1, 0.1],  # u = 10 * 0.3 / 2 + 4 = 5.5 -> 6 (rint), v = 3 + 1 = 4, z 2
            [0.0, 0, -3, 0.1],  # behind the camera
            [5.0, 0, 1, 0.1],
        ]
    )  # outside the 8 x 6 image
    depth = velodyne_depth(pts, T, K, 8, 6)
    assert depth[3, 4] == 5.0 and depth[4, 6] == 2.0
    assert np.isfinite(depth).sum() == 2


def test_garg_crop_fractions():
    mask = crop_mask(375, 1242)
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (153, 371, 44, 1197)
    assert crop_mask(4, 4, None).all()


@needs_kitti
def test_ground_truth_of_the_real_sample_sees_the_car_ahead():
    rec = shared_sample.raw_sample(KITTI_SAMPLE)
    ev = RealDepthEvaluator(rec, RealDepthSettings(stride=5))
    assert ev.frames == [0, 5]  # the sample has the first 10 scans
    rows, cols, gt = ev.truth[0]
    assert len(gt) > 10_000 and gt.max() < 80.0
    assert rows.min() >= 153 and cols.min() >= 44 and cols.max() < 1197  # inside the Garg crop
    car = gt[(cols >= 570) & (cols < 690) & (rows >= 220) & (rows < 280)]
    assert 7.0 < np.median(car) < 9.0


@needs_kitti
def test_a_wall_network_scores_as_a_constant_depth_prediction():
    rec = shared_sample.raw_sample(KITTI_SAMPLE)
    ev = RealDepthEvaluator(rec, RealDepthSettings(stride=5, samples=128))
    wall = 10.0
    result = ev.run(slab_model(wall), "sv", CanonicalCamera.from_normalised(KITTI_RAW, 192, 64), progress=False)
    assert result["frames"] == 2 and result["unseen_gt_pixels"] < 0.001 * result["gt_pixels"]

    def constant(z: float) -> dict[str, float]:
        """Independent: the frame-averaged metrics of predicting depth z at every ground-truth pixel."""
        per_frame = [depth_metrics(gt, np.full_like(gt, z)) for _, _, gt in ev.truth]
        return {k: float(np.mean([m[k] for m in per_frame])) for k in per_frame[0]}

    # the slab's rendered surface lies at the wall or up to two sample spacings (~0.25 m) behind it
    near, far = constant(wall), constant(wall + 0.5)
    assert near["abs_rel"] <= result["abs_rel"] <= far["abs_rel"]
    assert far["rmse"] <= result["rmse"] <= near["rmse"]
    assert far["a1"] <= result["a1"] <= near["a1"]


@needs_kitti
def test_ground_truth_the_networks_camera_does_not_see_is_not_scored_and_counted():
    rec = shared_sample.raw_sample(KITTI_SAMPLE)
    ev = RealDepthEvaluator(rec, RealDepthSettings(stride=5, samples=16))
    narrow = (2.0, 6.0, 0.1, -0.1)  # half the field of view of camera 02, off centre
    result = ev.run(slab_model(10.0), "sv", CanonicalCamera.from_normalised(narrow, 192, 64), progress=False)
    # independent: a pixel is seen when its ray lands inside the narrow view's normalised [-1, 1] square
    K = rec.rig.cameras[0].K
    seen = []
    for rows, cols, _ in ev.truth:
        x, y = (cols - K[0, 2]) / K[0, 0], (rows - K[1, 2]) / K[1, 1]
        seen.append((np.abs(narrow[0] * x + narrow[2]) <= 1) & (np.abs(narrow[1] * y + narrow[3]) <= 1))
    unseen = sum(int((~s).sum()) for s in seen)
    assert result["gt_pixels"] == sum(len(s) for s in seen)
    assert 0.3 * result["gt_pixels"] < unseen and abs(result["unseen_gt_pixels"] - unseen) <= 0.001 * unseen


@needs_kitti
def test_eval_command_on_the_real_sample(tmp_path, capsys):
    from kdbts_ros.core.loading import EMBEDDED_CHECKPOINT

    assert (
        main(
            [
                "eval",
                *raw_drive_eval_args(),
                "--model",
                f"KDBTS={EMBEDDED_CHECKPOINT}",
                "--stride",
                "9",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "KDBTS (SV)" in capsys.readouterr().out
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["crop"] == "garg" and report["frames"] == 2
    assert set(report["results"]) == {"KDBTS (SV)", "KDBTS (MV)"}
    table = (tmp_path / "results.md").read_text()
    for label, r in report["results"].items():
        assert r["frames"] == 2
        assert 0 < r["a1"] <= r["a2"] <= r["a3"] <= 1  # the delta thresholds nest
        # the shipped network on these held-out frames: Abs Rel 0.42 (SV) and 0.43 (MV), delta1 0.47 and 0.46
        # (docs/real: 0.41 and 0.44 over all ten scans); a constant 15 m scores 0.97 and 0.13 on this drive
        assert 0 < r["abs_rel"] < 0.6 and r["a1"] > 0.35, (label, r)
        assert f"| {label} | {r['abs_rel']:.3f} | {r['sq_rel']:.3f} | {r['rmse']:.3f} |" in table
    assert "O_acc" not in table


def test_flat_road_prior_meets_the_road_below_the_horizon_and_the_wall_above():
    from kdbts_ros.evaluation.priors import FlatRoad

    K = np.array([[700.0, 0, 600], [0, 700.0, 180], [0, 0, 1]])
    prior = FlatRoad(height_m=1.65, wall_m=30.0)
    rows = np.array([100.0, 180.0, 200.0, 375.0])
    depth = prior.depth(rows, np.zeros(4), K)
    # a ray through row v drops (v - cy) / fy metres per metre ahead: it meets the road at 1.65 fy / (v - cy)
    np.testing.assert_allclose(depth, [30.0, 30.0, 30.0, 1.65 * 700 / (375 - 180)])  # row 200 meets it at 57.75 m
    pts = np.array([[0.0, 1.0, 10.0], [0.0, 2.0, 10.0], [0.0, 0.0, 31.0]])
    assert prior.occupied(pts).tolist() == [False, True, True]
