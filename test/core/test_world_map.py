"""The fused world map: octomap log-odds arithmetic, decay, rolling window, robustness, memory."""

import math
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
from conftest import (
    ALL_SEEN,
    CFG,
    GRID,
    L_HIT,
    L_MAX,
    L_MIN,
    L_MISS,
    NONE_SEEN,
    NOTHING,
    camera_at,
    log_odds_at,
    wall_density,
)

from kdbts_ros.core.config import GridConfig, PipelineConfig
from kdbts_ros.core.grids import GridSpec
from kdbts_ros.core.settings import iter_params, set_param
from kdbts_ros.core.world_map import WorldMap
from kdbts_ros.runtime.config import RunnerConfig

WALL, FREE, UNSEEN = (10.1, 0.1, 1.1), (5.1, 0.1, 1.1), (-5.1, 0.1, 1.1)  # behind the camera: never seen


def test_a_wall_seen_again_and_again_rises_to_the_clamp_free_space_falls_unseen_stays_unknown():
    m = WorldMap(CFG)
    hits_to_clamp = math.ceil(L_MAX / L_HIT)  # 5 (4 hits: 3.39 < 3.48)
    for n in range(1, hits_to_clamp + 1):
        assert m.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=n * 10**8) is None
        assert log_odds_at(m, WALL) == pytest.approx(min(n * L_HIT, L_MAX), abs=1e-5)
        assert log_odds_at(m, FREE) == pytest.approx(max(n * L_MISS, L_MIN), abs=1e-5)
    assert log_odds_at(m, WALL) == pytest.approx(L_MAX, abs=1e-5)
    assert log_odds_at(m, FREE) == pytest.approx(L_MIN, abs=1e-5)
    assert log_odds_at(m, UNSEEN) == 0.0
    # what the grid holds: 20 across x 50 forward x 10 high cells, one voxel each
    assert m.known_cells() == 20 * 50 * 10 and m.status()["occupied"] == 20 * 2 * 10
    assert m.frames == hits_to_clamp and m.tilted == 0


def test_an_object_that_moves_away_clears_after_the_number_of_misses_the_log_odds_predict():
    m = WorldMap(CFG)
    for n in range(10):
        m.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=n * 10**8)
    misses_to_free = math.floor(L_MAX / -L_MISS) + 1  # 9: 3.476 - 8 * 0.405 > 0 > 3.476 - 9 * 0.405
    for n in range(1, misses_to_free + 1):
        m.integrate(np.zeros(GRID.shape, np.float32), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=(10 + n) * 10**8)
        assert (log_odds_at(m, WALL) > 0) == (n < misses_to_free), n
    assert m.occupied_points()[0].shape == (0, 3)


def test_decay_returns_what_is_no_longer_observed_to_unknown():
    m = WorldMap(replace(CFG, decay_per_s=1.0))
    for n in range(10):
        m.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=n * 10**8)
    assert log_odds_at(m, WALL) == pytest.approx(L_MAX, abs=1e-5)  # decay 0.1 per frame < one hit
    m.integrate(NOTHING, NONE_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=int(1.4e9))
    assert log_odds_at(m, WALL) == pytest.approx(L_MAX - 0.5, abs=1e-4)
    assert log_odds_at(m, FREE) == pytest.approx(L_MIN + 0.5, abs=1e-4)
    m.integrate(NOTHING, NONE_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=int(4.9e9))  # 3.476 - 0.5 - 3.5 < 0
    assert log_odds_at(m, WALL) == 0.0 and log_odds_at(m, FREE) == 0.0 and m.known_cells() == 0


def test_the_rolling_window_keeps_its_shape_and_forgets_what_is_left_behind():
    cfg = replace(CFG, extent_xy=20.0, extent_z=4.0)  # 100 x 100 x 20 voxels
    m = WorldMap(cfg)
    m.integrate(wall_density(6.0, 6.4), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=0)  # the window reaches x = 10
    shape, nbytes, origin0 = m.log_odds.shape, m.nbytes(), m.origin.copy()
    for k in range(1, 13):  # 12 m on: the window has re-centred twice (margin 5 m) but still holds x = 6.1
        m.integrate(NOTHING, NONE_SEEN, GRID, camera_at(float(k)), 0.5, stamp_ns=k * 10**8)
    assert m.origin[0] != origin0[0] and m.log_odds.shape == shape
    assert log_odds_at(m, (6.1, 0.1, 1.1)) == pytest.approx(L_HIT, abs=1e-5)
    points, _ = m.occupied_points()
    assert len(points) == 20 * 2 * 10 and np.allclose(np.sort(np.unique(points[:, 0])), [6.1, 6.3])
    assert np.allclose(np.sort(np.unique(points[:, 1])), np.arange(-1.9, 2.0, 0.2))
    for k in range(13, 201):  # 200 m: the wall left the window long ago
        m.integrate(NOTHING, NONE_SEEN, GRID, camera_at(float(k)), 0.5, stamp_ns=k * 10**8)
        assert m.log_odds.shape == shape and m.nbytes() == nbytes
    assert m.known_cells() == 0 and len(m.occupied_points()[0]) == 0
    lo, hi = m.origin[0] * 0.2, (m.origin[0] + m.shape[2]) * 0.2  # the window's x extent
    assert lo <= 200.0 <= hi and hi - lo == pytest.approx(20.0)


def test_a_coarse_grid_fills_a_fine_map_without_holes():
    coarse = GridSpec.from_config(
        GridConfig(x_min=-2.0, x_max=2.0, z_min=3.0, z_max=13.0, y_min=-1.2, y_max=0.8, resolution=0.4, height_levels=5)
    )
    m = WorldMap(CFG)
    m.integrate(np.zeros(coarse.shape, np.float32), np.zeros(coarse.shape, bool), coarse, camera_at(0.0), 0.5)
    assert m.known_cells() == np.prod(coarse.shape) * 8  # each 0.4 m cell covers 2 x 2 x 2 voxels


def test_bad_poses_and_densities_are_skipped_counted_and_never_fused():
    m = WorldMap(CFG)
    m.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=0)
    before = m.log_odds.copy()
    nan_pose = camera_at(1.0)
    nan_pose[0, 3] = np.nan
    sheared = camera_at(1.0)
    sheared[0, 0] = 2.0
    bad_density = wall_density()
    bad_density[0, 0, 0] = np.inf
    assert m.integrate(wall_density(), ALL_SEEN, GRID, nan_pose, 0.5, stamp_ns=10**8) == "non-finite pose"
    assert m.integrate(wall_density(), ALL_SEEN, GRID, None, 0.5, stamp_ns=10**8) == "no pose"
    assert m.integrate(wall_density(), ALL_SEEN, GRID, sheared, 0.5, stamp_ns=10**8) == "pose not rigid"
    assert m.integrate(bad_density, ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=10**8) == "non-finite density"
    assert m.fuse_samples(nan_pose, iter([(np.zeros((1, 3)), np.ones(1, bool))])) == "non-finite pose"
    assert np.array_equal(m.log_odds, before) and m.frames == 1
    assert m.skipped == {"non-finite pose": 2, "no pose": 1, "pose not rigid": 1, "non-finite density": 1}


def test_time_jumps_are_not_the_maps_to_detect_it_decays_by_forward_time_only_and_resets_when_told():
    # the runner's time-jump rule decides (MapStage.time_jump); the map itself neither resets on a bag loop
    # nor on a forward gap beyond max_time_gap
    keep = WorldMap(replace(CFG, decay_per_s=1.0))
    keep.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=50 * 10**8)
    keep.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=10**8)  # a bag loop: no decay
    assert not keep.resets and log_odds_at(keep, WALL) == pytest.approx(2 * L_HIT)
    keep.integrate(NOTHING, NONE_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=6 * 10**8)  # on from the new stamps
    assert log_odds_at(keep, WALL) == pytest.approx(2 * L_HIT - 0.5, abs=1e-4)
    gap = WorldMap(replace(CFG, decay_per_s=0.05))
    gap.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=10**8)
    gap.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=101 * 10**8)  # 10 s > max_time_gap
    assert not gap.resets and log_odds_at(gap, WALL) == pytest.approx(2 * L_HIT - 0.5, abs=1e-4)
    m = WorldMap(CFG)
    m.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=50 * 10**8)
    m.reset("time jump")  # what the rule reset does
    assert m.known_cells() == 0 and m.origin is None and m.last_stamp_ns is None
    m.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=10**8)
    assert m.resets == {"time jump": 1} and log_odds_at(m, WALL) == pytest.approx(L_HIT)


def test_a_fixed_frame_whose_z_is_not_up_is_counted_as_tilted():
    m = WorldMap(CFG)
    m.integrate(wall_density(), ALL_SEEN, GRID, np.eye(4), 0.5)  # an optical-frame world: camera y is the world's y
    assert m.tilted == 1


def test_memory_stays_flat_over_two_thousand_frames():
    spec = GridSpec.from_config(
        GridConfig(x_min=-1.0, x_max=1.0, z_min=3.0, z_max=5.0, y_min=-0.5, y_max=0.5, resolution=0.2, height_levels=5)
    )
    m = WorldMap(replace(CFG, extent_xy=6.0, extent_z=2.0, decay_per_s=0.5))
    rng = np.random.default_rng(0)
    density = rng.exponential(0.5, spec.shape).astype(np.float32)
    unseen = np.zeros(spec.shape, bool)
    nbytes = m.nbytes()
    tracemalloc.start()
    try:
        for k in range(2000):
            m.integrate(density, unseen, spec, camera_at(0.3 * k), 0.5, stamp_ns=k * 10**8)
            if k == 100:
                base = tracemalloc.get_traced_memory()[0]
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert m.frames == 2000 and m.nbytes() == nbytes and grown < 64 * 1024, grown


def test_the_map_section_is_in_the_parameter_table_and_checked():
    names = {s.name for s in iter_params(RunnerConfig())}
    assert {
        "map.enabled",
        "map.resolution",
        "map.extent_xy",
        "map.prob_hit",
        "map.time_jump_rule",
        "topics.map",
        "topics.map_points",
    } <= names
    cfg = PipelineConfig()
    with pytest.raises(ValueError, match="voxels is more than"):
        set_param(cfg, "map.resolution", 0.05)  # 1600 x 1600 x 160
    with pytest.raises(ValueError, match="clamp_min < prob_miss"):
        set_param(cfg, "map.prob_hit", 0.98)
    with pytest.raises(ValueError, match="min_z must be below"):
        set_param(cfg, "map.min_z", 2.0)
    assert cfg == PipelineConfig()
