"""The map evaluation's top-down picture: its colours are the map's cells, in the legend's colours."""

from __future__ import annotations

import numpy as np
from conftest import ALL_SEEN, CFG, GRID, camera_at, wall_density

from kdbts_ros.core.map_2d import occupancy_2d
from kdbts_ros.core.world_map import WorldMap
from kdbts_ros.evaluation.map_completion import FREE_BGR, MAP_LEGEND, OCCUPIED_BGR, UNKNOWN_BGR, top_down
from kdbts_ros.runtime.legends import with_legend


def test_the_top_down_picture_paints_each_column_as_the_2d_map_calls_it_north_up():
    m = WorldMap(CFG)
    for n in range(5):
        m.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=n * 10**8)
    ny, nx = m.shape[1:]
    picture = top_down(m, np.zeros((ny, nx), bool), np.ones((ny, nx), bool), (1.0, 2.0), np.zeros((0, 3)), "", 1)
    cells = occupancy_2d(m, 0.0, 1.0, 2.0).data[::-1]  # the 2-D map's rows run south to north
    for colour, expected in (
        (OCCUPIED_BGR, cells > 50),
        (FREE_BGR, (cells >= 0) & (cells < 50)),
        (UNKNOWN_BGR, cells < 0),
    ):
        np.testing.assert_array_equal((picture == colour).all(-1), expected)
    assert (cells > 50).any() and ((cells >= 0) & (cells < 50)).any()
    # under it, the legend with a swatch of each of those colours
    legend = with_legend(picture, MAP_LEGEND)[picture.shape[0] :]
    assert all((legend == colour).all(-1).any() for colour in (OCCUPIED_BGR, FREE_BGR, UNKNOWN_BGR))
