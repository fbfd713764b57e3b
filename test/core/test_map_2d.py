"""The world map's 2-D projection: a height band above the ground, and the map messages built from it."""

import numpy as np
import pytest
from conftest import ALL_SEEN, CFG, GRID, camera_at, wall_density

from kdbts_ros.core.map_2d import occupancy_2d
from kdbts_ros.core.world_map import WorldMap


def test_the_2d_map_is_the_band_above_the_ground_in_fixed_frame_axes():
    m = WorldMap(CFG)
    for n in range(5):
        m.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=n * 10**8)
    grid = occupancy_2d(m, 0.5, 0.5, 1.5)  # z 1.0 .. 2.0: the layers 1.1 .. 1.9 the grid saw
    x0, y0, z0 = grid.origin
    assert grid.data.shape == (200, 200) and grid.resolution == 0.2 and z0 == pytest.approx(1.0)

    def value(x, y):
        return grid.data[int((y - y0) / 0.2), int((x - x0) / 0.2)]

    assert value(10.1, 0.1) == round(97.0) and value(10.3, -1.9) == 97
    assert value(5.1, 0.1) == 12 and value(12.9, 1.9) == 12  # clamp_min
    assert value(-5.1, 0.1) == -1 and value(5.1, 2.1) == -1  # behind, beside the grid
    assert (grid.data >= 0).sum() == 20 * 50
    assert (occupancy_2d(m, 0.0, 3.0, 4.0).data == -1).all()  # a band above everything seen
    assert (occupancy_2d(m, 2.5, 0.2, 1.8).data == -1).all()  # the same band on a higher ground: above it too


def test_the_map_messages_carry_the_grid_and_the_occupied_voxels():
    from kdbts_ros.messages import cdr
    from kdbts_ros.messages.published import map_points, occupancy_grid_map

    m = WorldMap(CFG)
    for n in range(5):
        m.integrate(wall_density(), ALL_SEEN, GRID, camera_at(0.0), 0.5, stamp_ns=n * 10**8)
    grid = occupancy_2d(m, 0.0)
    msg = cdr.deserialize(cdr.serialize(occupancy_grid_map(grid, 123, "odom")), "nav_msgs/msg/OccupancyGrid")
    assert msg.header.frame_id == "odom" and (msg.info.width, msg.info.height) == (200, 200)
    assert msg.info.resolution == pytest.approx(0.2) and msg.info.origin.orientation.w == pytest.approx(1.0)
    assert (msg.info.origin.position.x, msg.info.origin.position.y) == pytest.approx(grid.origin[:2])
    assert np.array_equal(np.asarray(msg.data, np.int8), grid.data.reshape(-1))
    points, prob = m.occupied_points()
    cloud = cdr.deserialize(cdr.serialize(map_points(points, prob, 123, "odom")), "sensor_msgs/msg/PointCloud2")
    xyz = np.frombuffer(bytes(cloud.data), np.float32).reshape(-1, 5)[:, :3]
    assert cloud.width == len(points) == 400 and np.allclose(xyz, points, atol=1e-5)
