"""Colour bars: the bar's colours are the picture's for the values its ticks name; unknown has its swatch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kdbts_ros.runtime.legends import (
    UNKNOWN_BGR,
    depth_legend,
    legend_height,
    occupancy_legend,
    profile_legend,
    swatch_legend,
    with_legend,
)
from kdbts_ros.runtime.pictures import depth_png, occupancy_png

SCALE = 0.6
WIDTH = 800


def bar_row(strip: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The middle row of the colour bar and the first and last column of the bar (its first non-black run)."""
    rows = np.nonzero(strip.any(-1).any(1))[0]
    row = strip[rows[0] + 2]  # inside the bar, below its top edge
    lit = np.nonzero(row.any(-1))[0]
    first = lit[0]
    last = first + np.argmax(np.diff(np.r_[lit, lit[-1] + 2]) > 1)  # the end of the first run
    return row, first, lit[last - first] if last - first < len(lit) else lit[-1]


@pytest.mark.parametrize("metres", [3.0, 5.0, 10.0, 20.0, 80.0])
def test_the_depth_bar_shows_the_colour_a_depth_picture_gives_that_depth(metres):
    near, far = 3.0, 80.0
    strip = depth_legend(near, far)(WIDTH, SCALE)
    assert strip.shape == (legend_height(SCALE), WIDTH, 3)
    row, first, last = bar_row(strip)
    # independent: where metres sits, even in inverse depth from far (left) to near (right)
    level = (1 / metres - 1 / far) / (1 / near - 1 / far)
    x = first + round(level * (last - first))
    want = depth_png(np.full((1, 1), metres), near, far)[0, 0].astype(int)
    assert np.abs(row[x].astype(int) - want).max() <= 12


def test_unknown_has_a_grey_swatch_where_the_picture_can_be_unknown():
    def grey_block(strip: np.ndarray) -> np.ndarray:
        # solid grey (not a few anti-aliased text pixels)
        grey = (strip == UNKNOWN_BGR).all(-1).astype(np.uint8)
        return cv2.erode(grey, np.ones((5, 5), np.uint8)).astype(bool)

    for strip in (depth_legend(3.0, 80.0)(WIDTH, SCALE), occupancy_legend(WIDTH, SCALE)):
        block = grey_block(strip)
        assert block[:, 3 * WIDTH // 4 :].any() and not block[:, : 3 * WIDTH // 4].any()  # at the right end
        assert (strip == 255).all(-1).any()  # its labels
    assert not grey_block(profile_legend(WIDTH, SCALE)).any()  # the profile has no unknown


def test_the_occupancy_bar_runs_from_free_to_occupied_as_the_grid_picture():
    row, first, last = bar_row(occupancy_legend(WIDTH, SCALE))
    picture = occupancy_png(np.array([[0, 100]], np.int8), cell_px=1)[0]
    assert np.abs(row[first].astype(int) - picture[0]).max() <= 12
    assert np.abs(row[last].astype(int) - picture[1]).max() <= 12


def test_a_small_picture_is_scaled_by_a_whole_factor_above_its_legend():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (24, 80, 3), np.uint8)
    out = with_legend(small, occupancy_legend)
    assert out.shape[1] == 400 and out.shape[0] > 5 * 24  # 80 px wide: five times, to 400
    np.testing.assert_array_equal(out[: 5 * 24], cv2.resize(small, None, fx=5, fy=5, interpolation=cv2.INTER_NEAREST))
    wide = rng.integers(0, 256, (30, 500, 3), np.uint8)
    np.testing.assert_array_equal(with_legend(wide, occupancy_legend)[:30], wide)


def test_a_category_legend_shows_each_colour_as_a_solid_swatch_in_its_order():
    items = [((20, 20, 20), "occupied"), ((235, 235, 235), "free"), ((0, 0, 255), "lidar")]
    strip = swatch_legend(items)(WIDTH, SCALE)
    assert strip.shape == (legend_height(SCALE), WIDTH, 3)
    lefts = []
    for colour, _ in items:
        solid = cv2.erode((strip == colour).all(-1).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert solid.any(), colour
        lefts.append(np.nonzero(solid.any(0))[0][0])
    assert lefts == sorted(lefts)  # left to right as listed, each after the previous one's label
    assert (strip == 255).all(-1)[:, lefts[0] : lefts[1]].sum() > 20  # a label between two swatches
