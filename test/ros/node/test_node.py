"""kdbts_node in-process with real rclpy over Fast DDS: inputs in, every output checked.

The network is the analytic slab (density ~0 before camera depth 10 m, large
behind it), so the geometry of every output can be checked exactly.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg")
from conftest import slab_model, wait_until  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from kdbts_ros.core.model.checkpoint import save_checkpoint  # noqa: E402
from kdbts_ros.data.sequences import T_base_cam  # noqa: E402
from kdbts_ros.messages import cdr, sensor_data  # noqa: E402
from kdbts_ros.messages.topics import TopicsConfig  # noqa: E402
from kdbts_ros.msg import DensityGrid  # noqa: E402
from kdbts_ros.ros.node import KdbtsNode  # noqa: E402

# relative: resolved in the node's namespace (the probe's, the root)
CONFIDENCE = TopicsConfig().depth_confidence

pytestmark = pytest.mark.integration

W, H = 160, 60
K = np.array([[80.0, 0, 80.0], [0, 80.0, 25.0], [0, 0, 1]])
STAMP0 = 1_000 * 10**9
WALL = 10.0


def _T_odom_base(i: int) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = 1.5 * i
    return T


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    os.environ["ROS_DOMAIN_ID"] = str(100 + os.getpid() % 100)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    ckpt = tmp_path_factory.mktemp("ckpt") / "slab.safetensors"
    save_checkpoint(ckpt, slab_model(WALL))
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    overrides = {
        "model.checkpoint": str(ckpt),
        "model.image_height": 64,
        "model.image_width": 192,
        "planner.frame": "camera",  # the camera slab's grid, whose geometry these tests check
        "grid.resolution": 0.5,
        "render.depth_scale": 0.5,
        "render.samples": 64,
        "tf_timeout": 2.0,
    }
    node = KdbtsNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    node.trigger_configure()
    node.trigger_activate()
    probe = rclpy.create_node("probe", context=ctx)
    got: dict[str, list] = {}
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    for topic, cls in (
        ("/kdbts/occupancy", OccupancyGrid),
        ("/kdbts/points", PointCloud2),
        ("/kdbts/depth/image", Image),
        ("/kdbts/depth/camera_info", CameraInfo),
        (CONFIDENCE, Image),
        ("/kdbts/density_grid", DensityGrid),
        ("/diagnostics", DiagnosticArray),
    ):
        probe.create_subscription(cls, topic, lambda m, t=topic: got.setdefault(t, []).append(m), reliable)
    pubs = {
        "image": probe.create_publisher(Image, "/camera/image_raw", reliable),
        "info": probe.create_publisher(CameraInfo, "/camera/camera_info", reliable),
        "tf": probe.create_publisher(TFMessage, "/tf", reliable),
        "tf_static": probe.create_publisher(
            TFMessage,
            "/tf_static",
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
        ),
    }
    executor = SingleThreadedExecutor(context=ctx)  # as kdbts_node: inference has its own thread
    executor.add_node(node)
    executor.add_node(probe)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node, pubs, got
    executor.shutdown()
    node.destroy_node()
    probe.destroy_node()
    rclpy.shutdown(context=ctx)
    thread.join(timeout=5)


def _send_frame(pubs, i: int, image: np.ndarray | None = None, encoding: str = "rgb8", tf: bool = True) -> int:
    stamp = STAMP0 + i * 10**8
    if tf:
        pubs["tf"].publish(cdr.serialize(sensor_data.tf_message([("odom", "base_link", stamp, _T_odom_base(i))])))
    pubs["info"].publish(cdr.serialize(sensor_data.camera_info(K, W, H, stamp, "cam_optical")))
    rgb = image if image is not None else np.full((H, W, 3), 100 + i, np.uint8)
    msg = sensor_data.rgb_image(rgb, stamp, "cam_optical")
    msg.encoding = encoding
    pubs["image"].publish(cdr.serialize(msg))
    return stamp


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def test_outputs_arrive_with_type_frame_stamp_size_and_consistent_geometry(system):
    node, pubs, got = system
    pubs["tf_static"].publish(cdr.serialize(sensor_data.tf_message([("base_link", "cam_optical", 0, T_base_cam())])))
    assert wait_until(lambda: node.count_subscribers("/camera/image_raw") and node.count_publishers("/tf") >= 1, 10)
    time.sleep(0.5)
    stamps = []
    for i in range(3):
        stamps.append(_send_frame(pubs, i))
        assert wait_until(lambda: any(_stamp(m) == stamps[-1] for m in got.get("/kdbts/depth/image", [])), 60), (
            f"no depth for frame {i}; drops {dict(node.runner.drops)}"
        )
    last = stamps[-1]
    assert wait_until(
        lambda: all(
            any(_stamp(m) == last for m in got.get(t, []))
            for t in ("/kdbts/occupancy", "/kdbts/points", "/kdbts/density_grid", "/kdbts/depth/camera_info")
            + (CONFIDENCE,)
        )
    )
    pick = lambda t: next(m for m in got[t] if _stamp(m) == last)  # noqa: E731
    T_odom_cam = _T_odom_base(2) @ T_base_cam()
    T_cam_odom = np.linalg.inv(T_odom_cam)

    grid = pick("/kdbts/occupancy")
    assert grid.header.frame_id == "odom" and (grid.info.width, grid.info.height) == (36, 40)
    assert grid.info.resolution == pytest.approx(0.5) and len(grid.data) == 36 * 40
    o = grid.info.origin
    T_odom_grid = np.eye(4)
    from scipy.spatial.transform import Rotation

    T_odom_grid[:3, :3] = Rotation.from_quat(
        [o.orientation.x, o.orientation.y, o.orientation.z, o.orientation.w]
    ).as_matrix()
    T_odom_grid[:3, 3] = [o.position.x, o.position.y, o.position.z]
    values = np.array(grid.data, np.int8).reshape(40, 36)
    known = 0
    for iy in range(40):
        for ix in range(36):
            if values[iy, ix] < 0:
                continue
            known += 1
            # the cell centre, raised to the top of the 1 m band, in the camera: inside the frustum
            cell = T_cam_odom @ T_odom_grid @ [(ix + 0.5) * 0.5, (iy + 0.5) * 0.5, 1.0, 1.0]
            u, v, z = K @ cell[:3]
            assert z > 0 and -1 <= u / z <= W + 1, (ix, iy)
            # the slab: free in front of 10 m, opaque behind it
            if cell[2] < WALL - 0.5:
                assert values[iy, ix] == 0
            elif cell[2] > WALL + 1.0:
                assert values[iy, ix] == 100
    assert known > 100

    depth_msg, depth_info = pick("/kdbts/depth/image"), pick("/kdbts/depth/camera_info")
    assert depth_msg.header.frame_id == "cam_optical" and depth_msg.encoding == "32FC1"
    assert (depth_msg.height, depth_msg.width) == (32, 96) == (depth_info.height, depth_info.width)
    depth = np.frombuffer(bytes(depth_msg.data), "<f4").reshape(32, 96)
    spacing = WALL**2 * (1 / 3 - 1 / 80) / 64
    # the camera (90 x 41 deg) is narrower than the network's view (103 x 47): its sides and top are padding
    seen = np.isfinite(depth)
    assert 0.5 < seen.mean() < 1.0 and seen[16:, 40:56].all() and not seen[:, 0].any()
    assert np.all(depth[seen] >= WALL) and np.all(depth[seen] <= WALL + spacing + 0.05)
    # the confidence beside it, pixel for pixel: the wall stops every ray, the padding has none
    conf_msg = pick(CONFIDENCE)
    assert (conf_msg.header.frame_id, conf_msg.encoding, conf_msg.height, conf_msg.width) == (
        "cam_optical",
        "32FC1",
        32,
        96,
    )
    confidence = np.frombuffer(bytes(conf_msg.data), "<f4").reshape(32, 96)
    assert np.all(confidence[seen] > 0.999) and np.all(confidence[~seen] == 0.0)

    cloud = pick("/kdbts/points")
    assert cloud.header.frame_id == "odom" and cloud.point_step == 20
    xyz = np.frombuffer(bytes(cloud.data), np.uint8).reshape(-1, 20)[:, :12].copy().view("<f4")
    pts_cam = xyz @ T_cam_odom[:3, :3].T + T_cam_odom[:3, 3]
    Kd = np.array(depth_info.p).reshape(3, 4)[:, :3]
    uv = pts_cam @ Kd.T
    u = np.clip(np.rint(uv[:, 0] / uv[:, 2]).astype(int), 0, 95)
    v = np.clip(np.rint(uv[:, 1] / uv[:, 2]).astype(int), 0, 31)
    # every occupied voxel lies at or behind the rendered surface of its pixel
    rendered = np.isfinite(depth[v, u])  # a voxel at the view's edge may round onto a padded pixel
    assert rendered.mean() > 0.9 and np.all(pts_cam[rendered, 2] >= depth[v, u][rendered] - 0.5)

    dg = pick("/kdbts/density_grid")
    assert (dg.size_x, dg.size_y, dg.size_z) == (36, 40, 5) and len(dg.density) == 36 * 40 * 5
    assert dg.head == "sv" and dg.num_views == 1 and dg.header.frame_id == "odom"
    # the cloud holds exactly the seen voxels of the grid denser than grid.occupied_density, with their densities
    grid_density = np.asarray(dg.density, np.float32)
    occupied = grid_density[np.isfinite(grid_density) & (grid_density > node.cfg.grid.occupied_density)]
    cloud_density = np.frombuffer(bytes(cloud.data), np.uint8).reshape(-1, 20)[:, 12:16].copy().view("<f4")[:, 0]
    assert cloud.width == len(occupied) > 0
    np.testing.assert_array_equal(np.sort(cloud_density), np.sort(occupied))


def test_bad_inputs_are_counted_and_the_node_keeps_publishing(system):
    node, pubs, got = system
    before = dict(node.runner.drops)
    # images are decoded when their turn comes (a superseded one never is): one fault at a time
    _send_frame(pubs, 10, encoding="yuv444")  # unsupported encoding
    assert wait_until(lambda: node.runner.drops["bad_image"] > before.get("bad_image", 0), 10)
    _send_frame(pubs, 11, image=np.zeros((H + 2, W, 3), np.uint8))  # size differs from camera_info
    assert wait_until(lambda: node.runner.drops["size_mismatch"] > before.get("size_mismatch", 0), 10)
    stamp = _send_frame(pubs, 12)
    assert wait_until(lambda: any(_stamp(m) == stamp for m in got.get("/kdbts/depth/image", [])), 60)
    values = lambda m: {kv.key: kv.value for kv in m.status[0].values}  # noqa: E731
    # diagnostics come at 1 Hz: wait for a report that includes the last frame
    assert wait_until(lambda: any(int(values(m)["frames_processed"]) >= 4 for m in got.get("/diagnostics", [])), 15)
    report = values(got["/diagnostics"][-1])
    # one image dropped for each fault, as the runner counted it
    assert int(report["dropped_bad_image"]) == node.runner.drops["bad_image"] == before.get("bad_image", 0) + 1
    assert (
        int(report["dropped_size_mismatch"]) == node.runner.drops["size_mismatch"] == before.get("size_mismatch", 0) + 1
    )


def test_runtime_parameters_are_validated(system):
    node, _, _ = system
    ok = node.set_parameters([Parameter("grid.occupied_density", value=1.5)])[0]
    # applied between frames by the inference timer
    assert ok.successful and wait_until(lambda: node.cfg.grid.occupied_density == 1.5, 5)
    bad = node.set_parameters([Parameter("mode", value="both")])[0]
    assert not bad.successful and "not one of" in bad.reason
    start_only = node.set_parameters([Parameter("model.backbone", value="resnet18")])[0]
    assert not start_only.successful and "start-up" in start_only.reason


def test_the_map_is_latched_for_late_subscribers_and_cleared_and_saved_by_services(system, tmp_path):
    import cv2
    import open3d as o3d
    from std_srvs.srv import Trigger

    node, pubs, _ = system
    stem = tmp_path / "maps" / "drive"
    assert all(
        r.successful
        for r in node.set_parameters(
            [Parameter("map.enabled", value=True), Parameter("map.save_path", value=str(stem))]
        )
    )
    stamp = _send_frame(pubs, 30)
    assert wait_until(lambda: node.runner.mapping.enabled and node.runner.mapping.map.frames >= 1, 60)
    assert wait_until(lambda: node.runner.last.stamp_ns == stamp, 10)
    # a subscriber that starts after the map was published gets it (reliable, transient local, depth 1)
    late = rclpy.create_node("late_map_reader", context=node.context)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(late)
    maps: list = []
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    late.create_subscription(OccupancyGrid, "/kdbts/map", maps.append, latched)
    clear, save = (late.create_client(Trigger, f"/kdbts_node/{name}") for name in ("clear_map", "save_map"))

    def spin_until(cond, timeout=20.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not cond():
            executor.spin_once(timeout_sec=0.05)
        return cond()

    def call(client):
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(Trigger.Request())
        assert spin_until(future.done)
        return future.result()

    try:
        assert spin_until(lambda: maps)
        info = node.get_publishers_info_by_topic("/kdbts/map")[0].qos_profile
        assert info.durability == DurabilityPolicy.TRANSIENT_LOCAL and info.reliability == ReliabilityPolicy.RELIABLE
        grid = maps[-1]
        assert grid.header.frame_id == "odom" and (grid.info.height, grid.info.width) == (400, 400)
        assert max(grid.data) > 50  # the slab
        saved = call(save)
        assert saved.success, saved.message
        pcd, pgm, yml = (stem.with_suffix(s) for s in (".pcd", ".pgm", ".yaml"))
        assert all(str(f) in saved.message for f in (pcd, pgm, yml))
        assert len(o3d.io.read_point_cloud(str(pcd)).points) == node.runner.mapping.map.status()["occupied"] > 0
        assert cv2.imread(str(pgm), cv2.IMREAD_UNCHANGED).shape == (400, 400)
        cleared = call(clear)
        assert cleared.success and node.runner.mapping.map.known_cells() == 0
    finally:
        node.set_parameters([Parameter("map.enabled", value=False)])
        executor.shutdown()
        late.destroy_node()
