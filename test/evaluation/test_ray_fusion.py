"""Depth images and lidar scans fused as rays (the map evaluation's integrators)."""

from dataclasses import replace

import numpy as np
import pytest
from conftest import CFG, L_HIT, L_MISS, camera_at, log_odds_at

from kdbts_ros.core.world_map import WorldMap
from kdbts_ros.evaluation.ray_fusion import integrate_depth, integrate_points


def test_depth_rays_and_lidar_points_mark_surfaces_and_the_free_space_before_them():
    m = WorldMap(CFG)
    K = np.array([[10.0, 0.0, 2.0], [0.0, 10.0, 2.0], [0.0, 0.0, 1.0]])
    depth = np.full((5, 5), 10.0)
    depth[0, 0] = np.nan  # ignored
    assert integrate_depth(m, depth, K, camera_at(0.0)) is None
    assert log_odds_at(m, (10.1, 0.1, 1.7)) == pytest.approx(L_HIT)  # the centre ray's end: (10, 0, 1.6)
    assert log_odds_at(m, (5.1, 0.1, 1.7)) == pytest.approx(L_MISS)
    assert log_odds_at(m, (12.1, 0.1, 1.7)) == 0.0  # behind the surface
    far = WorldMap(replace(CFG, max_range=6.0))
    integrate_depth(far, depth, K, camera_at(0.0))
    assert far.status()["occupied"] == 0 and log_odds_at(far, (5.1, 0.1, 1.7)) == pytest.approx(L_MISS)
    lidar = WorldMap(CFG)
    integrate_points(lidar, np.array([[8.05, 0.1, 1.7], [0.1, 6.05, 1.7]]), np.array([0.1, 0.1, 1.7]))
    assert log_odds_at(lidar, (8.1, 0.1, 1.7)) == pytest.approx(L_HIT)
    assert log_odds_at(lidar, (4.1, 0.1, 1.7)) == pytest.approx(L_MISS)
    assert log_odds_at(lidar, (0.1, 3.1, 1.7)) == pytest.approx(L_MISS)
    assert lidar.known_cells() == 40 + 30 + 1  # 0.1..8.1 and 0.1..6.1 in steps of 0.2, the origin voxel shared


def test_a_bad_pose_or_sensor_origin_is_skipped_counted_and_never_fused():
    m = WorldMap(CFG)
    nan_pose = camera_at(1.0)
    nan_pose[0, 3] = np.nan
    assert integrate_depth(m, np.ones((4, 4)), np.eye(3), nan_pose) == "non-finite pose"
    scan = np.array([[8.05, 0.1, 1.7]])
    assert integrate_points(m, scan, np.array([np.nan, 0.1, 1.7]), T_fixed_cam=camera_at(0.0)) == "non-finite pose"
    assert integrate_points(m, scan, np.array([np.nan, 0.1, 1.7])) == "non-finite pose"
    assert m.frames == 0 and m.known_cells() == 0 and m.skipped == {"non-finite pose": 3}
