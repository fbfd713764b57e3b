"""Off-road and road pixels: the road plane fitted to a scan, where rays meet it, and the split metrics."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import KITTI_SAMPLE, needs_kitti
from scipy.spatial.transform import Rotation

from kdbts_ros.data import shared_sample
from kdbts_ros.evaluation.ground_split import off_ground, road_depth, road_plane
from kdbts_ros.evaluation.metrics import depth_metrics, ground_split_metrics
from kdbts_ros.evaluation.priors import FlatRoad
from kdbts_ros.evaluation.real_depth import RealDepthEvaluator, RealDepthSettings

HEIGHT = 1.65


def street_scan(rng: np.random.Generator) -> np.ndarray:
    """A road HEIGHT m below a level camera (y down) with 2 cm noise, and a car-sized box 10 m ahead."""
    road = np.column_stack([rng.uniform(-12, 12, 4000), HEIGHT + rng.normal(0, 0.02, 4000), rng.uniform(3, 38, 4000)])
    box = np.column_stack([rng.uniform(-1, 1, 800), rng.uniform(0.2, HEIGHT, 800), np.full(800, 10.0)])
    return np.vstack([road, box])


@pytest.mark.parametrize("pitch_deg", [0.0, 5.0, -3.0])
def test_the_road_plane_is_found_under_a_level_or_pitched_camera(pitch_deg):
    scan = street_scan(np.random.default_rng(0))
    # a camera pitched down by pitch_deg sees the world turned up by it (rotation about its x axis)
    R = Rotation.from_euler("x", pitch_deg, degrees=True).as_matrix()
    plane = road_plane(scan @ R.T)
    assert plane is not None
    up = R @ np.array([0.0, -1.0, 0.0])
    np.testing.assert_allclose(plane[:3], up, atol=2e-3)
    assert plane[3] == pytest.approx(HEIGHT, abs=0.01)


def test_rays_meet_the_road_where_the_flat_road_prior_says():
    plane = np.array([0.0, -1.0, 0.0, HEIGHT])
    K = np.array([[700.0, 0, 600], [0, 700.0, 180], [0, 0, 1]])
    rows, cols = np.array([200.0, 260.0, 375.0, 180.0, 120.0]), np.array([600.0, 100.0, 1100.0, 600.0, 600.0])
    rays = np.column_stack([(cols - K[0, 2]) / K[0, 0], (rows - K[1, 2]) / K[1, 1], np.ones(5)])
    road = road_depth(rays, plane)
    # the prior without its wall: the road below the horizon, nothing at and above it
    np.testing.assert_allclose(road[:3], FlatRoad(HEIGHT, np.inf).depth(rows, cols, K)[:3])
    assert np.isinf(road[3:]).all()


def test_off_ground_is_nearer_than_the_road_by_more_than_a_quarter():
    road = np.array([10.0, 10.0, 10.0, np.inf])
    gt = np.array([7.4, 7.6, 12.0, 40.0])
    np.testing.assert_array_equal(off_ground(gt, road), [True, False, False, True])


def test_a_scan_without_a_road_gives_no_plane():
    rng = np.random.default_rng(1)
    wall = np.column_stack([rng.uniform(-5, 5, 2000), rng.uniform(0.6, 3, 2000), np.full(2000, 8.0)])
    assert road_plane(wall) is None  # a vertical plane is no road
    assert road_plane(np.zeros((10, 3)) + [0, 1.65, 5]) is None  # too few points


def test_split_metrics_score_each_part_alone():
    gt = np.array([10.0, 10.0, 20.0, 20.0, 100.0])  # the last beyond 80 m: not scored
    pred = np.array([12.0, 10.0, 20.0, 30.0, 5.0])
    off = np.array([True, True, False, False, True])
    m = ground_split_metrics(gt, pred, off)
    assert m["off_abs_rel"] == pytest.approx(depth_metrics(gt[:2], pred[:2])["abs_rel"]) == pytest.approx(0.1)
    assert m["road_abs_rel"] == pytest.approx(0.25) and m["road_a1"] == pytest.approx(0.5)
    assert m["off_a1"] == 1.0 and m["off_share"] == pytest.approx(0.5)
    none_off = ground_split_metrics(gt, pred, np.zeros(5, bool))
    assert np.isnan(none_off["off_abs_rel"]) and none_off["off_share"] == 0.0


@needs_kitti
def test_the_split_explains_the_flat_road_priors_abs_rel_on_drive_0052():
    """The prior is right on the road and wrong off it: its geometry (1.65 m, level) holds on KITTI raw."""
    ev = RealDepthEvaluator(shared_sample.raw_sample(KITTI_SAMPLE), RealDepthSettings(stride=3))
    assert all(off is not None for off in ev.off_ground)  # every scan of the drive shows its road
    r = ev.run_prior(FlatRoad())
    assert r["road_abs_rel"] < 0.1 and r["road_a1"] > 0.85
    assert r["off_abs_rel"] > 1.0 and 0.3 < r["off_share"] < 0.8
    # the overall figure lies between the parts, weighted by how many pixels each has
    assert r["road_abs_rel"] < r["abs_rel"] < r["off_abs_rel"]
