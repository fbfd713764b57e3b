"""Grid cell size tied to the latency budget: coarser while frames are slow, back to the configured size when fast.

The grid query costs time in proportion to its cell count, i.e. to 1/resolution²
(the extent and the number of height levels stay fixed), so from one frame's
total and grid times the cell size that would have fit the budget follows
directly. Sizes are taken from a ladder of quarter octaves of the configured
size so that small timing noise does not change the published grid every frame,
and a band between REFINE_BELOW and 1 of the budget holds the size still.
"""

from __future__ import annotations

import math
from dataclasses import replace

from kdbts_ros.core.config import GridConfig
from kdbts_ros.core.grids import GridSpec

TARGET = 0.85  # aim a changed size at this share of the budget, leaving room for timing noise
REFINE_BELOW = 0.6  # refine only when a frame took less than this share of the budget
LADDER_STEPS = 4  # sizes per octave: resolution * 2 ** (k / LADDER_STEPS)


def ladder_size(base: float, wanted: float, coarsest: float, round_up: bool) -> float:
    """The ladder size base * 2^(k/4) next to ``wanted`` (up or down), within [base, coarsest]."""
    k = LADDER_STEPS * math.log2(max(wanted, base) / base)
    k = math.ceil(k - 1e-9) if round_up else math.floor(k + 1e-9)
    return min(base * 2 ** (k / LADDER_STEPS), coarsest)


class GridBudget:
    """The grid cell size to use for the next frame, adapted from the last frame's timings."""

    def __init__(self) -> None:
        self.resolution: float | None = None  # None: the configured size

    def current(self, base: float, coarsest: float) -> float:
        """Cell size for the next frame; the configured ``base`` when adaptation is off (coarsest <= base)."""
        if coarsest <= base or self.resolution is None:
            return base
        return min(max(self.resolution, base), coarsest)

    def spec(self, grid: GridConfig) -> GridSpec:
        """The grid of the next frame: the configured one, with the cell size the latency budget allows."""
        size = self.current(grid.resolution, grid.coarsest_resolution)
        return GridSpec.from_config(grid if size == grid.resolution else replace(grid, resolution=size))

    def next_spec(self, grid: GridConfig, budget_s: float, last: tuple[float, float] | None) -> GridSpec:
        """The grid of the next frame after adapting to the last grid-querying frame's ``(frame_s, grid_s)``.

        The runner's one call per frame: the previous frame's timings are applied here, when the
        next frame starts, rather than by a second call at the end of the frame.
        """
        if last is not None:
            self.update(grid.resolution, grid.coarsest_resolution, budget_s, *last)
        return self.spec(grid)

    def update(self, base: float, coarsest: float, budget_s: float, frame_s: float, grid_s: float) -> float:
        """Adapt to a frame that took ``frame_s`` in all, ``grid_s`` of it in the grid query; returns the new size."""
        r = self.current(base, coarsest)
        if coarsest <= base or budget_s <= 0 or grid_s <= 0:
            self.resolution = None
            return r
        if REFINE_BELOW * budget_s <= frame_s <= budget_s:
            return r
        grid_target = TARGET * budget_s - (frame_s - grid_s)
        # grid_target <= 0: the other stages alone exceed the budget: the grid can only help so much
        wanted = coarsest if grid_target <= 0 else r * math.sqrt(grid_s / grid_target)
        # over budget: round to the next coarser size; under: to the next finer that still fits
        self.resolution = ladder_size(base, wanted, coarsest, round_up=frame_s > budget_s)
        return self.resolution
