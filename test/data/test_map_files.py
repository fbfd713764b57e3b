"""The world map's files: the occupied voxels as PCD and PLY, the 2-D map as map_server's pgm + yaml."""

import numpy as np
import pytest
from conftest import ALL_SEEN, CFG, GRID, camera_at, wall_density

from kdbts_ros.core.map_2d import occupancy_2d
from kdbts_ros.core.world_map import WorldMap
from kdbts_ros.data.map_files import save_pgm_yaml, save_points


def test_saved_point_clouds_and_the_map_server_pair_read_back(tmp_path):
    o3d = pytest.importorskip("open3d")
    cv2 = pytest.importorskip("cv2")
    import yaml

    m = WorldMap(CFG)
    for n in range(5):
        m.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=n * 10**8)
    points, _ = m.occupied_points()
    for name in ("map.pcd", "map.ply"):
        assert save_points(tmp_path / name, *m.occupied_points()) == len(points) == 400
        back = np.asarray(o3d.io.read_point_cloud(str(tmp_path / name)).points)
        assert np.allclose(back, points, atol=1e-5)
    with pytest.raises(ValueError, match=r"pcd or \.ply"):
        save_points(tmp_path / "map.xyz", *m.occupied_points())
    grid = occupancy_2d(m, 0.0, 1.0, 2.0)
    pgm, meta = save_pgm_yaml(tmp_path / "maps" / "drive", grid)
    info = yaml.safe_load(meta.read_text())
    assert info == {
        "image": "drive.pgm",
        "mode": "trinary",
        "resolution": 0.2,
        "origin": [pytest.approx(grid.origin[0]), pytest.approx(grid.origin[1]), 0.0],
        "negate": 0,
        "occupied_thresh": 0.65,
        "free_thresh": 0.25,
    }
    image = cv2.imread(str(pgm), cv2.IMREAD_UNCHANGED)
    assert pgm.read_bytes()[:2] == b"P5" and image.shape == grid.data.shape and image.dtype == np.uint8
    # map_server reads row 0 as the highest y: flip back and compare with the grid
    expected = np.where(grid.data < 0, 205, np.where(grid.data >= 65, 0, np.where(grid.data <= 25, 254, 205)))
    assert np.array_equal(image[::-1], expected)
    assert set(np.unique(image)) == {0, 205, 254}
