"""The camera-aligned grid and its bird's-eye reduction."""

import numpy as np

from kdbts_ros.core.config import GridConfig
from kdbts_ros.core.grids import GridSpec, bev_occupancy, occupied_voxels


def test_spec_sizes_and_cell_centres_follow_the_grid_frame():
    spec = GridSpec.from_config(GridConfig())
    assert spec.shape == (5, 100, 90)  # 45,000 cells: the paper's 0.2 m, five levels
    c = spec.centres_cam()
    T = spec.T_cam_grid()
    for iz, iy, ix in [(0, 0, 0), (4, 99, 89), (2, 37, 11)]:
        local = np.array([(ix + 0.5) * 0.2, (iy + 0.5) * 0.2, (iz + 0.5) * 0.2, 1.0])
        np.testing.assert_allclose(c[iz, iy, ix], (T @ local)[:3], atol=1e-12)
    # across = camera x, forward = camera z, up = camera -y: level 0 is the lowest (largest y)
    np.testing.assert_allclose(c[0, 0, 0], [-8.9, 0.9, 3.1], atol=1e-12)
    np.testing.assert_allclose(c[4, 99, 89], [8.9, 0.1, 22.9], atol=1e-12)
    assert np.isclose(np.linalg.det(T[:3, :3]), 1.0)


def test_bev_occupancy_is_column_opacity_in_percent():
    density = np.zeros((4, 2, 3))
    invalid = np.zeros_like(density, dtype=bool)
    density[:, 0, 0] = 1.0  # optical depth 4 * 1 * 0.25 = 1
    density[1, 1, 2] = 100.0  # opaque
    invalid[:, 1, 1] = True  # never seen
    invalid[0, 0, 1] = True
    density[0, 0, 1] = 1e6  # unseen levels do not count
    occ = bev_occupancy(density, invalid, 0.25)
    assert occ.dtype == np.int8
    assert occ[0, 0] == round(100 * (1 - np.exp(-1.0)))
    assert occ[1, 2] == 100 and occ[0, 1] == 0 and occ[1, 1] == -1 and occ[0, 2] == 0


def test_occupied_voxels_keep_seen_cells_above_threshold():
    centres = np.arange(12, dtype=float).reshape(4, 3)
    density = np.array([0.1, 0.6, 2.0, 5.0])
    invalid = np.array([False, False, False, True])
    pts, d = occupied_voxels(centres, density, invalid, 0.5)
    np.testing.assert_array_equal(pts, centres[1:3])
    np.testing.assert_array_equal(d, [0.6, 2.0])
