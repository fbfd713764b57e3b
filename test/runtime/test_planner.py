"""The planner's occupancy grid: axis-aligned in base_link, its band above the ground, obstacles where they stand.

A camera 1.5 m above the ground, yawed 30 degrees and pitched 15 degrees down in base_link, sees
the slab network's wall: everything at camera depth 10 m and beyond is dense. Which cells of the
base_link grid must then be occupied, free or unknown is worked out here with scipy's rotations
alone (not the package's geometry).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import columns_in_camera, planner_cells, slab_model, small_config
from scipy.spatial.transform import Rotation

from kdbts_ros.core.stages import Stages
from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.runtime.runner import FrameRunner

S = 1_000_000_000
W, H = 640, 192
K = np.array([[160.0, 0, W / 2], [0, 160.0, H / 2], [0, 0, 1]])  # 127 x 62 deg: wider than the network's view
# optical axes in base_link (x forward, y left, z up): optical x right = -y, y down = -z, z forward = x
R_BASE_OPTICAL_LEVEL = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
YAW, PITCH, HEIGHT = 30.0, 15.0, 1.5


def T_base_cam() -> np.ndarray:
    """The camera in base_link: turned left by YAW, tilted down by PITCH (about base_link's y), HEIGHT up."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("zy", [YAW, PITCH], degrees=True).as_matrix() @ R_BASE_OPTICAL_LEVEL
    T[:3, 3] = (0.0, 0.0, HEIGHT)
    return T


@pytest.fixture(scope="module")
def wall():
    return slab_model(10.0)


def run(model, bases: list[np.ndarray | None], map_on: bool = False) -> tuple[FrameRunner, list, list]:
    """One frame per pose of base_link in odom (None: no base frame, the camera fixed on odom): (runner, grids,
    maps)."""
    overrides = {"topics.images": ["/cam/image_raw"], "topics.camera_infos": ["/cam/camera_info"], "mode": "sv"}
    if map_on:
        overrides |= {"map.enabled": True, "map.publish_rate": 100.0}
    cfg = small_config(**overrides)
    runner = FrameRunner(cfg, Stages(cfg, model))
    parent = "odom" if bases[0] is None else "base_link"
    runner.handle("/tf_static", cdr.serialize(sensor_data.tf_message([(parent, "cam", 0, T_base_cam())])), 0)
    grids, maps = [], []
    for i, T in enumerate(bases):
        t = S + i * S // 10
        if T is not None:
            runner.handle("/tf", cdr.serialize(sensor_data.tf_message([("odom", "base_link", t, T)])), t)
        runner.handle("/cam/camera_info", cdr.serialize(sensor_data.camera_info(K, W, H, t, "cam")), t)
        rgb = np.full((H, W, 3), 100, np.uint8)
        runner.handle("/cam/image_raw", cdr.serialize(sensor_data.rgb_image(rgb, t, "cam")), t)
        for topic, msgtype, data in runner.step(t):
            if topic == cfg.topics.occupancy:
                grids.append(cdr.deserialize(data, msgtype))
            elif topic == cfg.topics.map:
                maps.append(cdr.deserialize(data, msgtype))
    return runner, grids, maps


def test_a_yawed_and_pitched_camera_puts_the_wall_in_base_link_cells_along_its_axes(wall):
    runner, grids, _ = run(wall, [np.eye(4)])
    grid = grids[-1]
    assert grid.header.frame_id == "base_link"
    q = grid.info.origin.orientation
    assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)  # nav2 reads only the position
    g = runner.cfg.planner
    p = grid.info.origin.position
    assert (p.x, p.y, p.z) == pytest.approx((g.x_min, g.y_min, g.ground_z + g.z_min))
    values = np.asarray(grid.data, np.int8).reshape(grid.info.height, grid.info.width)

    wall_behind, clear, unseen = planner_cells(grid, runner.cfg, T_base_cam(), runner.stages.canonical.lens())
    assert wall_behind.sum() > 50 and clear.sum() > 50 and unseen.sum() > 50
    assert (values[wall_behind] >= 50).all()
    assert (values[clear] <= 10).all() and (values[clear] >= 0).all()
    assert (values[unseen] == -1).all()  # the near field is unknown, never free
    # the wall runs across the camera's axis, 30 degrees left of base_link's x: its cells are not one row
    rows = np.nonzero(wall_behind)[0]
    assert rows.max() - rows.min() > 10


def test_without_a_base_frame_the_grid_is_in_the_fixed_frame_around_the_camera_and_said_once(wall):
    runner, grids, _ = run(wall, [None, None])
    assert len(grids) == 2 and all(gr.header.frame_id == "odom" for gr in grids)
    assert runner.faults["planner_frame_fallback"] == 1
    info = grids[-1].info
    q = info.origin.orientation
    assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)  # odom is z-up here (map.up_axis auto)
    # a square window centred on the camera, its corner on the resolution's lattice
    centre = np.array([info.origin.position.x, info.origin.position.y]) + info.width * info.resolution / 2
    np.testing.assert_allclose(centre, T_base_cam()[:2, 3], atol=info.resolution)
    assert info.width == info.height
    assert info.origin.position.x / info.resolution == pytest.approx(round(info.origin.position.x / info.resolution))


def base_at(x: float, z: float, yaw: float = 20.0) -> np.ndarray:
    """base_link in odom: turned by ``yaw`` degrees, ``x`` metres along its own forward axis from (3, -2), ``z`` up."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", yaw, degrees=True).as_matrix()
    T[:3, 3] = T[:3, :3] @ (x, 0.0, 0.0) + (3.0, -2.0, z)
    return T


def test_the_world_map_lies_along_odom_its_band_above_the_ground_under_base_link(wall):
    base = base_at(0.0, 0.5)
    runner, _, maps = run(wall, [base], map_on=True)
    grid, g = maps[-1], runner.cfg.map
    q, p = grid.info.origin.orientation, grid.info.origin.position
    assert grid.header.frame_id == "odom" and (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)
    ground = 0.5 + runner.cfg.planner.ground_z  # base_link is 0.5 m up in odom: the ground under it too
    assert p.z == pytest.approx(ground + g.min_z)  # not the camera's height (2.0 m) nor its tilt
    # where the wall stands: each column's band seen from the camera, worked out from the message alone
    depth = columns_in_camera(grid, p.z, p.z + g.max_z - g.min_z, 9, base @ T_base_cam())[..., 2]
    values = np.asarray(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
    occupied, free = values >= 50, (values >= 0) & (values < 50)
    assert occupied.sum() >= 10 and free.sum() >= 200
    assert (depth[occupied].max(-1) > 9.5).all()  # an occupied column reaches behind the wall
    assert (depth[free].min(-1) < 10.5).all()  # a free one has a stretch in front of it


def test_the_near_field_the_grid_leaves_unknown_the_map_knows_from_earlier_frames(wall):
    runner, grids, maps = run(wall, [base_at(4.0 * i, 0.5 + 0.1 * i) for i in range(3)], map_on=True)
    grid, m = grids[-1], maps[-1]
    assert m.info.origin.position.z == pytest.approx(0.7 + runner.cfg.map.min_z)  # the band follows the ground
    values = np.asarray(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
    _, _, unseen = planner_cells(grid, runner.cfg, T_base_cam(), runner.stages.canonical.lens())
    rows, cols = np.nonzero(unseen)
    assert (values[rows, cols] == -1).all()
    r = grid.info.resolution
    o = grid.info.origin.position
    centres = np.stack([o.x + (cols + 0.5) * r, o.y + (rows + 0.5) * r, np.zeros(len(rows)), np.ones(len(rows))], -1)
    odom = centres @ base_at(8.0, 0.7).T
    mr = m.info.resolution
    ix = ((odom[:, 0] - m.info.origin.position.x) / mr).astype(int)
    iy = ((odom[:, 1] - m.info.origin.position.y) / mr).astype(int)
    known = np.asarray(m.data, np.int8).reshape(m.info.height, m.info.width)[iy, ix] >= 0
    assert known.sum() >= 50  # seen from 4 and 8 m back


def test_the_camera_slab_is_kept_on_request(wall):
    cfg = small_config(**{"planner.frame": "camera"})
    assert cfg.planner.frame == "camera"
    runner = FrameRunner(cfg, Stages(cfg, wall))
    assert not runner.planner.enabled


def test_the_shipped_nav2_costmaps_read_the_nodes_default_outputs_and_band():
    import yaml

    from kdbts_ros.runtime.config import RunnerConfig

    cfg = RunnerConfig()
    root = Path(__file__).resolve().parents[2]
    nav2 = yaml.safe_load((root / "config/nav2/costmaps.yaml").read_text())
    local = nav2["local_costmap"]["local_costmap"]["ros__parameters"]
    source = local["obstacle_layer"]["kdbts_points"]
    # relative topic names: a node at the root publishes them under /
    assert source["topic"] == "/" + cfg.topics.points and source["data_type"] == "PointCloud2"
    assert local["robot_base_frame"] == cfg.planner.frame and local["global_frame"] == cfg.fixed_frame
    band = (cfg.planner.ground_z + cfg.planner.z_min, cfg.planner.ground_z + cfg.planner.z_max)
    assert (source["min_obstacle_height"], source["max_obstacle_height"]) == pytest.approx(band)
    static = nav2["global_costmap"]["global_costmap"]["ros__parameters"]["static_layer"]
    assert static["map_topic"] == "/" + cfg.topics.map and static["map_subscribe_transient_local"] is True


def test_a_moving_base_keeps_its_grid_cells_in_the_camera_and_the_same_occupancy(wall, monkeypatch):
    """base_link drives and turns through odom; the camera is rigid on it, so the grid's cells stay put in the
    camera (up to the rounding of going through odom and back) and are formed once; each frame's grid is the
    first's."""
    from kdbts_ros.core.planar_grid import PlanarGridSpec

    formed = []
    centres = PlanarGridSpec.centres
    monkeypatch.setattr(PlanarGridSpec, "centres", lambda self: formed.append(1) or centres(self))
    bases = []
    for i in range(4):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("z", 7.0 * i + 0.3, degrees=True).as_matrix()
        T[:3, 3] = (1234.5 + 3.1 * i, -87.25 + 0.7 * i, 0.02 * i)  # far from odom's origin: rounding at work
        bases.append(T)
    _, grids, _ = run(wall, bases)
    assert len(grids) == 4 and len(formed) == 1
    for grid in grids[1:]:
        assert np.array_equal(grid.data, grids[0].data)
