"""Grid cell size tied to the latency budget: the cost model, the ladder, and the runner using it."""

import math

import numpy as np
import pytest
from conftest import small_config

from kdbts_ros.core.frames import Frame
from kdbts_ros.runtime.grid_budget import REFINE_BELOW, TARGET, GridBudget, ladder_size
from kdbts_ros.runtime.runner import FrameRunner


def test_ladder_sizes_are_quarter_octaves_of_the_configured_size_within_bounds():
    assert ladder_size(0.2, 0.25, 1.0, round_up=True) == pytest.approx(0.2 * 2**0.5)  # 0.238 < 0.25 <= 0.283
    assert ladder_size(0.2, 0.25, 1.0, round_up=False) == pytest.approx(0.2 * 2**0.25)
    assert ladder_size(0.2, 0.1, 1.0, round_up=True) == 0.2  # never finer than configured
    assert ladder_size(0.2, 3.0, 1.0, round_up=True) == 1.0  # never coarser than the cap
    assert ladder_size(0.2, 0.4, 1.0, round_up=True) == pytest.approx(0.4)  # exact rungs stay put


def test_a_slow_frame_coarsens_the_grid_so_the_predicted_frame_fits_the_budget():
    b = GridBudget()
    # 0.5 s budget; the frame took 0.8 s, 0.6 s of it in the grid query: the rest is 0.2 s, so the grid
    # may take 0.85 * 0.5 - 0.2 = 0.225 s, i.e. cells sqrt(0.6 / 0.225) = 1.63 times as large
    r = b.update(0.2, 2.0, 0.5, 0.8, 0.6)
    assert r == ladder_size(0.2, 0.2 * math.sqrt(0.6 / 0.225), 2.0, round_up=True)
    assert 0.2 * 1.63 <= r < 0.2 * 1.63 * 2**0.25
    # with the cost model (grid time ~ 1 / size^2) the next frame fits
    assert 0.2 + 0.6 * (0.2 / r) ** 2 <= TARGET * 0.5
    assert b.current(0.2, 2.0) == r


def test_frames_inside_the_band_hold_the_size_and_fast_frames_refine_back_to_the_configured_size():
    b = GridBudget()
    r = b.update(0.2, 2.0, 0.5, 1.0, 0.9)
    # 0.9 s of the 1.0 s frame in the grid: the grid may take TARGET * 0.5 - 0.1 s, cells scale by the root
    assert r == ladder_size(0.2, 0.2 * math.sqrt(0.9 / (TARGET * 0.5 - 0.1)), 2.0, round_up=True) > 0.2
    assert b.update(0.2, 2.0, 0.5, 0.45, 0.2) == r  # within [0.6, 1] of the budget: no change
    assert b.update(0.2, 2.0, 0.5, REFINE_BELOW * 0.5 * 0.99, 0.2) < r
    for _ in range(20):  # fast frames: back down, never below 0.2
        r = b.update(0.2, 2.0, 0.5, 0.05, 0.01)
    assert r == 0.2


def test_other_stages_over_budget_take_the_coarsest_size_and_adaptation_off_keeps_the_configured_size():
    b = GridBudget()
    assert b.update(0.2, 0.8, 0.5, 2.0, 0.1) == 0.8  # the encoder alone is over budget
    assert b.update(0.2, 0.0, 0.5, 2.0, 0.1) == 0.2  # coarsest 0: off, and it forgets
    assert b.current(0.2, 0.8) == 0.2
    # a new configured size clamps a remembered one
    b.update(0.2, 0.8, 0.5, 2.0, 0.1)
    assert b.current(0.3, 0.6) == 0.6 and b.current(1.0, 2.0) == 1.0


def test_next_spec_applies_the_last_frames_timings_before_giving_the_grid():
    grid = small_config().grid
    grid.coarsest_resolution = 2.0
    b, ref = GridBudget(), GridBudget()
    assert b.next_spec(grid, 0.5, None).resolution == grid.resolution  # no frame yet: the configured grid
    r = ref.update(grid.resolution, 2.0, 0.5, 0.8, 0.6)
    spec = b.next_spec(grid, 0.5, (0.8, 0.6))
    assert r > grid.resolution and spec.resolution == pytest.approx(r)
    assert spec.shape == ref.spec(grid).shape
    assert b.next_spec(grid, 0.5, None).resolution == pytest.approx(r)  # a frame without a grid changes nothing


def test_the_runner_publishes_a_coarser_grid_while_over_budget_and_the_configured_one_when_off():
    cfg = small_config(latency_budget=1e-4)
    cfg.grid.coarsest_resolution = 1.0
    runner = FrameRunner(cfg)
    K = np.array([[120.0, 0, 96], [0, 120.0, 32], [0, 0, 1]])
    img = np.random.default_rng(0).integers(0, 255, (64, 192, 3), dtype=np.uint8)
    first = runner.process(Frame(img, K, 1, "c", None), want_depth=False)
    second = runner.process(Frame(img, K, 2, "c", None), want_depth=False)
    assert first.spec.resolution == 0.5  # nothing measured yet
    assert second.spec.resolution == 1.0  # no frame fits 0.1 ms: the cap
    nx, nz = round(18 / 1.0), round(20 / 1.0)
    assert second.density.shape == (cfg.grid.height_levels, nz, nx)
    assert second.occupancy.shape == (nz, nx)
    cfg.grid.coarsest_resolution = 0.0  # a run-time change turns it off
    third = runner.process(Frame(img, K, 3, "c", None), want_depth=False)
    assert third.spec.resolution == 0.5 and third.density.shape[1:] == (40, 36)
