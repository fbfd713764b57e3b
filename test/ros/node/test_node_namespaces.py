"""Two kdbts_nodes at once over real rclpy, one per camera in its own namespace, brought up as nav2's lifecycle
manager brings them up (config/nav2_lifecycle.yaml): each reads its own camera and its own parameters (the
``/**`` section of one parameter file, then its own), and publishes its outputs and diagnostics under its name.

The network is the analytic slab (see test_node.py); the rear camera looks backwards.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg")
pytest.importorskip("lifecycle_msgs.srv")
from conftest import slab_model, wait_until  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from kdbts_ros.core.model.checkpoint import save_checkpoint  # noqa: E402
from kdbts_ros.data.sequences import T_base_cam  # noqa: E402
from kdbts_ros.messages import cdr, sensor_data  # noqa: E402
from kdbts_ros.ros.node import KdbtsNode  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
W, H = 160, 60
K = np.array([[80.0, 0, 80.0], [0, 80.0, 25.0], [0, 0, 1]])
STAMP0 = 2_000 * 10**9
# each camera's frame, and its stamps apart from the other's: what a node publishes says whose images it read
CAMERAS = {"/front": ("front_optical", 0), "/rear": ("rear_optical", 5 * 10**7)}
RESOLUTION = {"/front": 0.5, "/rear": 1.0}  # the shared section's, and the rear node's own


def _T_base(yaw_deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    T = np.eye(4)
    T[:2, :2] = [[c, -s], [s, c]]
    return T @ T_base_cam()


def _manager() -> dict:
    """The lifecycle manager's parameters in the shipped example."""
    tree = yaml.safe_load((ROOT / "config/nav2_lifecycle.yaml").read_text())
    return tree["lifecycle_manager_perception"]["ros__parameters"]


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    os.environ["ROS_DOMAIN_ID"] = str(100 + (os.getpid() + 37) % 100)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    tmp = tmp_path_factory.mktemp("two")
    ckpt = tmp / "slab.safetensors"
    save_checkpoint(ckpt, slab_model(10.0))
    shared = {
        "model": {"checkpoint": str(ckpt), "image_height": 64, "image_width": 192},
        "render": {"depth_scale": 0.5, "samples": 64},
        "grid": {"resolution": RESOLUTION["/front"]},
        "planner": {"resolution": RESOLUTION["/front"]},  # the OccupancyGrid is the planner's
        "tf_timeout": 2.0,
    }
    params = tmp / "robot.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": shared},
                "/rear/kdbts_node": {
                    "ros__parameters": {
                        "grid": {"resolution": RESOLUTION["/rear"]},
                        "planner": {"resolution": RESOLUTION["/rear"]},
                    }
                },
            }
        )
    )
    ctx = rclpy.Context()
    # as the launch gives them: every node of the process reads both files, each its own sections
    files = [str(params), str(ROOT / "config/nav2_lifecycle.yaml")]
    rclpy.init(context=ctx, args=["--ros-args", *(a for f in files for a in ("--params-file", f))])
    nodes = {ns: KdbtsNode(context=ctx, namespace=ns) for ns in CAMERAS}
    probe = rclpy.create_node("probe", context=ctx)
    got: dict[str, list] = {}
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    for ns in CAMERAS:
        for topic, cls in (("kdbts/occupancy", OccupancyGrid), ("kdbts/depth/image", Image)):
            name = f"{ns}/{topic}"
            probe.create_subscription(cls, name, lambda m, t=name: got.setdefault(t, []).append(m), reliable)
    probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: got.setdefault("diag", []).append(m), 50)
    pubs = {
        ns: (
            probe.create_publisher(Image, f"{ns}/camera/image_raw", reliable),
            probe.create_publisher(CameraInfo, f"{ns}/camera/camera_info", reliable),
        )
        for ns in CAMERAS
    }
    tf = probe.create_publisher(TFMessage, "/tf", reliable)
    tf_static = probe.create_publisher(
        TFMessage,
        "/tf_static",
        QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    executor = SingleThreadedExecutor(context=ctx)
    for node in (*nodes.values(), probe):
        executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield nodes, probe, pubs, tf, tf_static, got
    executor.shutdown()
    for node in (*nodes.values(), probe):
        node.destroy_node()
    rclpy.shutdown(context=ctx)
    thread.join(timeout=5)


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


class _Recorder:
    """A node's logger that keeps the lines."""

    def __init__(self, lines: list[str]):
        self.lines = lines

    def _say(self, msg: str, **_kwargs) -> None:
        self.lines.append(msg)

    debug = info = warning = error = fatal = _say


def _bring_up(context, node_names: list[str], timeout: float) -> list[tuple[str, int]]:
    """What nav2's lifecycle manager does with bond_timeout 0: for each node in order, change_state
    configure then activate, each checked by get_state; returns (node, state id) after each step."""
    manager = rclpy.create_node("lifecycle_manager_perception", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(manager)

    def call(client, request):
        assert client.wait_for_service(timeout_sec=timeout), f"{client.srv_name} not offered"
        future = client.call_async(request)
        executor.spin_until_future_complete(future, timeout_sec=120)  # configure loads the network
        assert future.done(), f"{client.srv_name} did not answer"
        return future.result()

    steps = []
    try:
        for name in node_names:
            change = manager.create_client(ChangeState, f"{name}/change_state")
            get = manager.create_client(GetState, f"{name}/get_state")
            for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
                assert call(change, ChangeState.Request(transition=Transition(id=transition))).success, name
                steps.append((name, call(get, GetState.Request()).current_state.id))
    finally:
        executor.shutdown()
        manager.destroy_node()
    return steps


def test_two_nodes_in_two_namespaces_each_read_their_camera_and_publish_their_own_outputs(system):
    nodes, probe, pubs, tf, tf_static, got = system
    manager = _manager()
    assert manager["bond_timeout"] == 0.0  # without it the manager waits for a bond kdbts_node does not form
    assert manager["node_names"] == [n.get_fully_qualified_name() for n in nodes.values()]
    # each node: its parameters (the shared section, then its own), its topics under its namespace
    for ns, node in nodes.items():
        assert node.cfg.autostart is False  # config/nav2_lifecycle.yaml's section for every kdbts_node
        assert node.cfg.grid.resolution == RESOLUTION[ns]
        assert node.cfg.topics.images == [f"{ns}/camera/image_raw"]
    steps = _bring_up(probe.context, manager["node_names"], timeout=10)
    states = [State.PRIMARY_STATE_INACTIVE, State.PRIMARY_STATE_ACTIVE]
    assert steps == [(name, s) for name in manager["node_names"] for s in states]
    published = {t for t, _ in probe.get_topic_names_and_types()}
    for ns in CAMERAS:
        assert {f"{ns}/kdbts/occupancy", f"{ns}/kdbts/depth/image", f"{ns}/kdbts/depth/camera_info"} <= published
    assert not {t for t in published if t.startswith("/kdbts/")}  # nothing outside the namespaces

    said: dict[str, list[str]] = {ns: [] for ns in CAMERAS}
    for ns, node in nodes.items():  # what each node logs from here on
        node.get_logger = lambda said=said[ns]: _Recorder(said)

    statics = [("base_link", frame, 0, _T_base(180.0 * i)) for i, (frame, _) in enumerate(CAMERAS.values())]
    tf_static.publish(cdr.serialize(sensor_data.tf_message(statics)))
    assert wait_until(lambda: all(n.count_subscribers(f"{ns}/camera/image_raw") for ns, n in nodes.items()), 10)
    time.sleep(0.5)
    sent: dict[str, list[int]] = {ns: [] for ns in CAMERAS}
    for i in range(2):
        base = STAMP0 + i * 10**8
        poses = [("odom", "base_link", s, np.eye(4)) for s in (base, base + 10**8 - 1)]  # both cameras' stamps
        tf.publish(cdr.serialize(sensor_data.tf_message(poses)))
        for ns, (frame, offset) in CAMERAS.items():
            stamp = base + offset
            image, info = pubs[ns]
            info.publish(cdr.serialize(sensor_data.camera_info(K, W, H, stamp, frame)))
            image.publish(cdr.serialize(sensor_data.rgb_image(np.full((H, W, 3), 90 + i, np.uint8), stamp, frame)))
            sent[ns].append(stamp)
        for ns in CAMERAS:
            assert wait_until(
                lambda ns=ns: any(_stamp(m) == sent[ns][-1] for m in got.get(f"{ns}/kdbts/depth/image", [])), 60
            ), f"{ns}: no depth for frame {i}; drops {dict(nodes[ns].runner.drops)}"
    for ns, (frame, _) in CAMERAS.items():
        # its own camera's frames (stamps and frame id), and nothing of the other's
        depth = got[f"{ns}/kdbts/depth/image"]
        assert {_stamp(m) for m in depth} <= set(sent[ns]) and {m.header.frame_id for m in depth} == {frame}
        assert wait_until(lambda ns=ns: any(_stamp(m) == sent[ns][-1] for m in got.get(f"{ns}/kdbts/occupancy", [])))
        grids = got[f"{ns}/kdbts/occupancy"]
        assert {_stamp(m) for m in grids} <= set(sent[ns])
        assert {round(m.info.resolution, 6) for m in grids} == {RESOLUTION[ns]}  # its own parameters

    # diagnostics (1 Hz): one status per node, named after it, on its own camera, counting its own frames
    def status(fq: str):
        return next((s for a in reversed(got.get("diag", [])) for s in a.status if s.hardware_id == fq), None)

    def values(fq: str) -> dict[str, str]:
        return {kv.key: kv.value for kv in status(fq).values} if status(fq) is not None else {}

    # the core's log lines: each node says what is its own (its camera's intrinsics), never the other's
    for ns, other in zip(CAMERAS, reversed(CAMERAS)):
        assert any(f"intrinsics from {ns}/camera/camera_info" in line for line in said[ns]), said[ns]
        assert not any(f"{other}/camera" in line for line in said[ns]), said[ns]
    names = [n.get_fully_qualified_name() for n in nodes.values()]
    assert wait_until(lambda: all(int(values(fq).get("frames_processed", 0)) == 2 for fq in names), 5)
    for ns, fq in zip(CAMERAS, names):
        assert status(fq).name == f"{fq}: density field" and values(fq)["camera0_topic"] == f"{ns}/camera/image_raw"
