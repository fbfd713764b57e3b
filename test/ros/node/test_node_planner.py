"""kdbts_node's occupancy grids as nav2 reads them: late subscribers with the static layer's QoS get the last grid,
axis-aligned in base_link, and the world map, axis-aligned in odom, the slab network's wall in the cells where it
stands for a yawed and pitched camera."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg")
from conftest import columns_in_camera, planner_cells, slab_model, wait_until  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from kdbts_ros.core.model.checkpoint import save_checkpoint  # noqa: E402
from kdbts_ros.messages import cdr, sensor_data  # noqa: E402
from kdbts_ros.ros.node import KdbtsNode  # noqa: E402

pytestmark = pytest.mark.integration

W, H = 640, 192
K = np.array([[160.0, 0, W / 2], [0, 160.0, H / 2], [0, 0, 1]])
STAMP = 2_000 * 10**9
# nav2_costmap_2d's static layer with map_subscribe_transient_local: reliable, transient local, depth 1
NAV2_STATIC_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def T_base_cam() -> np.ndarray:
    """A camera 1.5 m up in base_link, turned 30 degrees left and tilted 15 degrees down (scipy's rotations)."""
    level = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # optical axes in base_link, facing forward
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("zy", [30.0, 15.0], degrees=True).as_matrix() @ level
    T[:3, 3] = (0.0, 0.0, 1.5)
    return T


def test_a_late_nav2_static_layer_gets_the_grid_with_the_wall_where_it_stands(tmp_path):
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    ckpt = tmp_path / "slab.safetensors"
    save_checkpoint(ckpt, slab_model(10.0))
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=100 + os.getpid() % 99)
    overrides = {
        "model.checkpoint": str(ckpt),
        "model.image_height": 64,
        "model.image_width": 192,
        "tf_timeout": 2.0,
        "map.enabled": True,
    }
    node = KdbtsNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    node.trigger_configure()
    node.trigger_activate()
    probe = rclpy.create_node("probe", context=ctx)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    tf_static = probe.create_publisher(TFMessage, "/tf_static", latched)
    tf = probe.create_publisher(TFMessage, "/tf", reliable)
    info = probe.create_publisher(CameraInfo, "/camera/camera_info", reliable)
    image = probe.create_publisher(Image, "/camera/image_raw", reliable)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    executor.add_node(probe)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        tf_static.publish(cdr.serialize(sensor_data.tf_message([("base_link", "cam_optical", 0, T_base_cam())])))
        assert wait_until(lambda: node.runner.processed == 0 and image.get_subscription_count() > 0, 10)
        for i in range(20):  # until the node has processed one frame (discovery takes a moment)
            stamp = STAMP + i * 10**8
            tf.publish(cdr.serialize(sensor_data.tf_message([("odom", "base_link", stamp, np.eye(4))])))
            info.publish(cdr.serialize(sensor_data.camera_info(K, W, H, stamp, "cam_optical")))
            image.publish(cdr.serialize(sensor_data.rgb_image(np.full((H, W, 3), 100, np.uint8), stamp, "cam_optical")))
            if wait_until(lambda: node.runner.processed > 0, 3):
                break
        assert node.runner.processed > 0, dict(node.runner.drops)
        time.sleep(0.5)  # the grid has been published before anyone asked for it
        got: list = []
        maps: list = []
        probe.create_subscription(OccupancyGrid, "/kdbts/occupancy", got.append, NAV2_STATIC_QOS)
        probe.create_subscription(OccupancyGrid, "/kdbts/map", maps.append, NAV2_STATIC_QOS)
        assert wait_until(lambda: len(got) > 0, 10), "a transient-local subscriber joining late gets the last grid"
        assert wait_until(lambda: len(maps) > 0, 10), "and the last map"
    finally:
        executor.shutdown()
        thread.join(timeout=5)
    grid = got[-1]
    assert grid.header.frame_id == "base_link"
    q = grid.info.origin.orientation
    assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)
    values = np.asarray(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
    wall_behind, clear, unseen = planner_cells(grid, node.cfg, T_base_cam(), node.runner.stages.canonical.lens())
    assert wall_behind.sum() > 50 and clear.sum() > 50
    assert (values[wall_behind] >= 50).all() and (values[clear] <= 10).all() and (values[unseen] == -1).all()
    # the map: in odom (base_link at its origin here), identity orientation, its band above the ground
    world = maps[-1]
    q, p = world.info.origin.orientation, world.info.origin.position
    assert world.header.frame_id == "odom" and (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)
    assert p.z == pytest.approx(node.cfg.planner.ground_z + node.cfg.map.min_z)
    cells = np.asarray(world.data, np.int8).reshape(world.info.height, world.info.width)
    depth = columns_in_camera(world, p.z, p.z + node.cfg.map.max_z - node.cfg.map.min_z, 9, T_base_cam())[..., 2]
    occupied, free = cells >= 50, (cells >= 0) & (cells < 50)
    assert occupied.any() and free.sum() > 100
    assert (depth[occupied].max(-1) > 9.5).all() and (depth[free].min(-1) < 10.5).all()  # behind / before the wall
    node.destroy_node()
    probe.destroy_node()
    rclpy.shutdown(context=ctx)
