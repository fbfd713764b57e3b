"""kdbts_node with two cameras and a moving TF tree over real rclpy: every input fault, and still publishing.

The node runs in-process (own rclpy Context and DDS domain, multi-threaded executor in a
thread) with the analytic slab network; a probe node publishes the inputs as a driver and a
localiser would (left camera raw, right camera png on ``.../compressed``, odom->base_link on
/tf per frame, base_link->camera on /tf_static) and records every output. Each test injects
faults, checks what the node says about them (counters, /diagnostics, outputs) and that a
fresh frame is published afterwards. Tests share the node and run in file order; stamps only
grow (except where time jumps back on purpose), so each test starts from where the last ended.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg")
import torch  # noqa: E402
from conftest import slab_model, wait_until  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Float64  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from kdbts_ros.core.field import query_memory_mb  # noqa: E402
from kdbts_ros.core.model.checkpoint import save_checkpoint  # noqa: E402
from kdbts_ros.data.rig import RigCamera  # noqa: E402
from kdbts_ros.messages import cdr, sensor_data  # noqa: E402
from kdbts_ros.messages.topics import TopicsConfig  # noqa: E402
from kdbts_ros.msg import DensityGrid  # noqa: E402
from kdbts_ros.ros.node import KdbtsNode  # noqa: E402

pytestmark = pytest.mark.integration

W, H = 120, 40
K = np.array([[60.0, 0, 60], [0, 60, 20], [0, 0, 1]])
IMAGES = ["/left/image_raw", "/right/image_raw/compressed"]
INFOS = ["/left/camera_info", "/right/camera_info"]
RIG = [RigCamera("left", 0.0, 0.0, (0.0, 0.25, 1.5)), RigCamera("right", 0.0, 0.0, (0.0, -0.25, 1.5))]
STAMP0 = time.time_ns() // 10**9 * 10**9  # near the wall clock, so that latencies are plausible
PERIOD = 10**8  # 10 Hz stamps
STEP_M = 0.5  # the base moves this far per frame: above keyframe.distance, so every frame is a keyframe
TF_TIMEOUT = 0.3
DG, OCC, DEPTH, DEPTH_INFO = "/kdbts/density_grid", "/kdbts/occupancy", "/kdbts/depth/image", "/kdbts/depth/camera_info"
CONFIDENCE = "/" + TopicsConfig().depth_confidence  # relative: a node at the root publishes it under /
DEPTH_OUTPUTS = (DEPTH, DEPTH_INFO, CONFIDENCE)
OUTPUT_TYPES = {
    OCC: OccupancyGrid,
    "/kdbts/points": PointCloud2,
    DEPTH: Image,
    DEPTH_INFO: CameraInfo,
    CONFIDENCE: Image,
    DG: DensityGrid,
    "/kdbts/latency": Float64,
    "/diagnostics": DiagnosticArray,
}
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def _stamp(msg: Any) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def _values(msg: DiagnosticArray) -> dict[str, str]:
    return {kv.key: kv.value for kv in msg.status[0].values}


def _base(x: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = x
    return T


class System:
    """The node under test and a probe that feeds it like a two-camera rig and records its outputs."""

    def __init__(self, node: KdbtsNode, probe: Any):
        self.node, self.probe = node, probe
        self.got: dict[str, list] = defaultdict(list)
        self.subs: dict[str, Any] = {}
        for topic in OUTPUT_TYPES:
            self.subscribe(topic)
        static = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.pubs = {
            "tf": probe.create_publisher(TFMessage, "/tf", RELIABLE),
            "tf_static": probe.create_publisher(TFMessage, "/tf_static", static),
            IMAGES[0]: probe.create_publisher(Image, IMAGES[0], RELIABLE),
            IMAGES[1]: probe.create_publisher(CompressedImage, IMAGES[1], RELIABLE),
            INFOS[0]: probe.create_publisher(CameraInfo, INFOS[0], RELIABLE),
            INFOS[1]: probe.create_publisher(CameraInfo, INFOS[1], RELIABLE),
        }
        self.stamp = STAMP0
        self.moves = 0

    @property
    def runner(self):
        return self.node.runner

    def subscribe(self, topic: str) -> None:
        self.subs[topic] = self.probe.create_subscription(
            OUTPUT_TYPES[topic], topic, lambda m, t=topic: self.got[t].append(m), RELIABLE
        )

    def unsubscribe(self, topic: str) -> None:
        self.probe.destroy_subscription(self.subs.pop(topic))

    # ------------------------------------------------------------ inputs
    def next_stamp(self) -> int:
        self.stamp += PERIOD
        self.moves += 1
        return self.stamp

    def pose(self, stamp: int, x: float | None = None) -> None:
        x = STEP_M * self.moves if x is None else x
        self.pubs["tf"].publish(cdr.serialize(sensor_data.tf_message([("odom", "base_link", stamp, _base(x))])))

    def info(self, cam: int, stamp: int, K_: np.ndarray = K, size: tuple[int, int] = (W, H)) -> None:
        self.pubs[INFOS[cam]].publish(cdr.serialize(sensor_data.camera_info(K_, *size, stamp, RIG[cam].name)))

    def image(
        self,
        cam: int,
        stamp: int,
        size: tuple[int, int] = (W, H),
        fmt: str = "png",
        frame_id: str | None = None,
        **fields: Any,
    ) -> None:
        """Publish a camera's image; ``fields`` overwrite message fields (encoding, data) to break it."""
        w, h = size
        rgb = np.full((h, w, 3), 90 + self.moves % 100, np.uint8)
        rgb[:, : w // 2, 0] = 200
        frame_id = frame_id or RIG[cam].name
        msg = (
            sensor_data.compressed_image(rgb, stamp, frame_id, fmt)
            if cam == 1
            else sensor_data.rgb_image(rgb, stamp, frame_id)
        )
        for k, v in fields.items():
            setattr(msg, k, v)
        self.pubs[IMAGES[cam]].publish(cdr.serialize(msg))

    def frame(
        self,
        tf: bool = True,
        left: dict | None = None,
        right: dict | None = None,
        infos: tuple[np.ndarray, tuple[int, int]] | None = (K, (W, H)),
    ) -> int:
        """One rig frame at the next stamp: pose, both camera_infos, right then left image; returns the stamp."""
        stamp = self.next_stamp()
        if tf:
            self.pose(stamp)
        if infos is not None:
            for cam in (0, 1):
                self.info(cam, stamp, *infos)
        self.image(1, stamp, **(right or {}))
        self.image(0, stamp, **(left or {}))
        return stamp

    # ------------------------------------------------------------ outputs
    def published(self, stamp: int, topic: str = DG) -> Any:
        return next((m for m in list(self.got[topic]) if _stamp(m) == stamp), None)

    def has_pose(self, stamp: int) -> bool:
        """Whether the node's TF buffer has the base pose at ``stamp``."""
        try:
            self.runner.tf.lookup("odom", "base_link", stamp)
            return True
        except LookupError:
            return False

    def wait_published(self, stamp: int, topic: str = DG, timeout: float = 60.0) -> Any:
        assert wait_until(lambda: self.published(stamp, topic) is not None, timeout), (
            f"no {topic} for stamp {stamp}; drops {dict(self.runner.drops)}, faults {dict(self.runner.faults)}"
        )
        return self.published(stamp, topic)

    def fresh_frame(self, **kwargs: Any) -> Any:
        """Send a good rig frame and return its DensityGrid: the node is still publishing."""
        return self.wait_published(self.frame(**kwargs))

    def wait_drop(self, reason: str, before: int, timeout: float = 10.0) -> None:
        assert wait_until(lambda: self.runner.drops[reason] > before, timeout), (
            f"no {reason} drop; drops {dict(self.runner.drops)}, faults {dict(self.runner.faults)}"
        )

    def wait_fault(self, reason: str, before: int, timeout: float = 10.0) -> None:
        assert wait_until(lambda: self.runner.faults[reason] > before, timeout), (
            f"no {reason} fault; drops {dict(self.runner.drops)}, faults {dict(self.runner.faults)}"
        )

    def wait_diagnostics(self, cond: Callable[[DiagnosticArray], bool], timeout: float = 10.0) -> DiagnosticArray:
        """The first /diagnostics report from now on that satisfies ``cond`` (reports come at 1 Hz)."""
        start = len(self.got["/diagnostics"])
        found: list[DiagnosticArray] = []

        def match() -> bool:
            found.extend(m for m in self.got["/diagnostics"][start + len(found) :] if cond(m))
            return bool(found)

        assert wait_until(match, timeout), f"no such /diagnostics; last: {self.got['/diagnostics'][-1:]}"
        return found[0]


def _node(ctx: Any, overrides: dict[str, Any]) -> KdbtsNode:
    return KdbtsNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "slab.safetensors"
    save_checkpoint(path, slab_model(10.0))
    return path


@pytest.fixture(scope="module")
def system(checkpoint):
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    ctx = rclpy.Context()
    # a domain of its own (test_node.py uses 100..199), so parallel runs do not hear each other
    rclpy.init(context=ctx, domain_id=1 + os.getpid() % 99)
    node = _node(
        ctx,
        {
            "topics.images": IMAGES,
            "topics.camera_infos": INFOS,
            "mode": "auto",
            "model.checkpoint": str(checkpoint),
            "model.image_height": 64,
            "model.image_width": 192,
            "planner.frame": "camera",  # the camera slab's grid, whose geometry these tests check
            "grid.resolution": 0.5,
            "render.depth_scale": 0.5,
            "render.samples": 32,
            "tf_timeout": TF_TIMEOUT,
            "input_reliable": True,
        },
    )
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    probe = rclpy.create_node("probe", context=ctx)
    s = System(node, probe)
    executor = SingleThreadedExecutor(context=ctx)  # as kdbts_node: inference has its own thread
    executor.add_node(node)
    executor.add_node(probe)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    s.pubs["tf_static"].publish(
        cdr.serialize(sensor_data.tf_message([("base_link", c.name, 0, c.T_base_cam()) for c in RIG]))
    )
    # reliable delivery needs matched endpoints: wait until every writer sees its reader
    assert wait_until(
        lambda: (
            all(p.get_subscription_count() > 0 for p in s.pubs.values())
            and all(p.get_subscription_count() > 0 for topic, p in node.pubs.items() if topic in OUTPUT_TYPES)
        ),
        20,
    )
    yield s
    executor.shutdown()
    node.destroy_node()
    probe.destroy_node()
    rclpy.shutdown(context=ctx)
    thread.join(timeout=5)


# ---------------------------------------------------------------- cameras


def test_an_image_before_any_camera_info_is_dropped_after_the_timeout(system):
    """camera_info missing: the image waits tf_timeout for it, then is dropped; diagnostics say 'missing'."""
    s = system  # the first test: no camera_info has been sent yet
    report = s.wait_diagnostics(lambda m: "camera0_intrinsics" in _values(m))
    assert _values(report)["camera0_intrinsics"] == "missing" == _values(report)["camera1_intrinsics"]
    stamp = s.frame(infos=None)
    s.wait_drop("no_camera_info", 0)
    assert s.published(stamp) is None
    s.fresh_frame()


def test_two_cameras_form_rig_frames_for_the_multi_view_head(system):
    s = system
    stamps, grids = [], []
    for _ in range(3):
        stamps.append(s.frame())
        grids.append(s.wait_published(stamps[-1]))
    # the right camera, 0.5 m beside the left one, sees the grid: auto mode takes the MV head
    assert all(g.head == "mv" and g.num_views >= 2 for g in grids)
    # each rig frame is a keyframe: both cameras' images enter the window
    assert [e.camera for e in s.runner.window.entries][-2:] == ["right", "left"]
    for topic in (OCC, "/kdbts/points", DEPTH, DEPTH_INFO):
        assert s.wait_published(stamps[-1], topic).header.frame_id == ("left" if "depth" in topic else "odom")
    values = _values(s.wait_diagnostics(lambda m: int(_values(m)["frames_processed"]) >= 4))
    assert values["camera0_topic"] == IMAGES[0] and values["camera1_topic"] == IMAGES[1]
    assert int(values["camera0_images"]) >= 4 and int(values["camera1_images"]) >= 4
    assert values["camera0_intrinsics"] == "k" == values["camera1_intrinsics"]  # raw topics: K (and D)
    assert values["head"] == "mv" and int(values["num_views"]) >= 2
    # a network this small is not worth model.compile's build
    assert values["encoder"].startswith("torch (") and "below model.compile_min_gflop 20" in values["encoder"]


# ---------------------------------------------------------------- TF


def test_tf_missing_late_unknown_and_invalid(system):
    s = system
    drops = s.runner.drops.copy()
    # missing: no pose at (or after) the image stamp ever comes -> dropped after tf_timeout
    stamp = s.frame(tf=False)
    s.wait_drop("tf_late", drops["tf_late"])
    assert s.published(stamp) is None
    # an image in a frame TF does not know
    stamp = s.frame(left={"frame_id": "nowhere"})
    s.wait_drop("tf_unknown_frame", drops["tf_unknown_frame"])
    assert s.published(stamp) is None
    # NaN and non-unit quaternions are refused, not stored
    for w in (float("nan"), 2.0):
        bad = sensor_data.tf_message([("odom", "base_link", s.stamp, _base(0.0))])
        bad.transforms[0].transform.rotation.w = w
        s.pubs["tf"].publish(cdr.serialize(bad))
    s.wait_drop("bad_tf", drops["bad_tf"] + 1)
    s.fresh_frame()
    # late, but within tf_timeout: the image waits for its pose (a long timeout makes this certain)
    assert s.node.set_parameters([Parameter("tf_timeout", value=5.0)])[0].successful
    assert wait_until(lambda: s.node.cfg.tf_timeout == 5.0, 5)
    received = s.runner.cameras[0].received
    stamp = s.frame(tf=False)
    assert wait_until(lambda: s.runner.cameras[0].received > received, 5)
    assert s.published(stamp) is None and s.runner.pending.stamp_ns == stamp
    s.pose(stamp)
    s.wait_published(stamp)
    assert s.node.set_parameters([Parameter("tf_timeout", value=TF_TIMEOUT)])[0].successful
    s.fresh_frame()


# ---------------------------------------------------------------- camera_info and images


def test_camera_info_zero_and_changing(system):
    s = system
    drops, faults = s.runner.drops.copy(), s.runner.faults.copy()
    s.info(0, s.stamp, K_=np.zeros((3, 3)))
    s.wait_drop("bad_camera_info", drops["bad_camera_info"])
    s.info(1, s.stamp, size=(0, 0))
    s.wait_drop("bad_camera_info", drops["bad_camera_info"] + 1)
    before = s.wait_published(s.frame(), DEPTH_INFO)  # the last good intrinsics are kept
    lens = s.runner.cameras[0].intrinsics.lens
    assert lens.K[0, 0] == K[0, 0]
    # a camera that changes its calibration: counted, and the new intrinsics are used (the depth image stays
    # in the network's camera)
    scaled = K * [[1.1], [1.1], [1]]
    after = s.wait_published(s.frame(infos=(scaled, (W, H))), DEPTH_INFO)
    s.wait_fault("camera_info_changed", faults["camera_info_changed"] + 1)  # both cameras
    assert s.runner.cameras[0].intrinsics.lens.K[0, 0] == pytest.approx(1.1 * K[0, 0])
    assert after.k[0] == before.k[0]
    s.fresh_frame()


def _size(intrinsics) -> tuple[int, int] | None:
    return None if intrinsics is None else (intrinsics.lens.width, intrinsics.lens.height)


def test_image_encoding_size_and_format_changes(system):
    s = system
    drops, faults = s.runner.drops.copy(), s.runner.faults.copy()
    # bgr8 instead of rgb8 on the left, jpeg instead of png on the right: counted, still used
    grid = s.fresh_frame(left={"encoding": "bgr8"}, right={"fmt": "jpeg"})
    assert grid.num_views >= 2
    assert s.runner.faults["image_format_changed"] >= faults["image_format_changed"] + 2
    # a bigger image with matching camera_info (sent first, as by a driver restarted at another resolution):
    # a new format and new intrinsics, processed
    faults = s.runner.faults.copy()
    big = (2 * W, 2 * H)
    s.info(0, s.stamp, K * [[2], [2], [1]], big)
    assert wait_until(lambda: _size(s.runner.cameras[0].intrinsics) == big, 5)
    stamp = s.next_stamp()
    s.pose(stamp)
    s.info(1, stamp)
    s.image(1, stamp)
    s.image(0, stamp, size=big)
    s.wait_published(stamp)
    assert s.runner.faults["image_format_changed"] > faults["image_format_changed"]
    assert s.runner.faults["camera_info_changed"] > faults["camera_info_changed"]
    # an image unlike its camera_info cannot be used
    s.info(0, s.stamp)
    assert wait_until(lambda: _size(s.runner.cameras[0].intrinsics) == (W, H), 5)
    stamp = s.frame(left={"size": big})
    s.wait_drop("size_mismatch", drops["size_mismatch"])
    assert s.published(stamp) is None
    s.fresh_frame()


def test_a_corrupt_compressed_image_leaves_the_left_camera_frame(system):
    s = system
    drops = s.runner.drops.copy()
    stamp = s.frame(right={"data": np.frombuffer(b"\x89PNG garbage", np.uint8)})
    grid = s.wait_published(stamp)
    assert s.runner.drops["bad_image"] == drops["bad_image"] + 1
    # the left image is processed with the window; the broken right image never enters it
    assert s.runner.last.stamp_ns == stamp and grid.num_views >= 2
    assert [e.camera for e in s.runner.window.entries if e.stamp_ns == stamp] == ["left"]
    s.fresh_frame()


# ---------------------------------------------------------------- timing


def _blocking_process(s: System, monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make the next runner.process wait for ``release``; ``started`` is set when it is entered."""
    started, release = threading.Event(), threading.Event()
    real = s.runner.process

    def process(*args: Any, **kwargs: Any):
        if not started.is_set():
            started.set()
            release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(s.runner, "process", process)
    return started, release


def test_time_jumping_back_clears_the_window_even_mid_frame(system, monkeypatch):
    """A looping bag: images and TF go back by 5 s while a frame is processed; the window restarts."""
    s = system
    drops, faults = s.runner.drops.copy(), s.runner.faults.copy()
    s.fresh_frame()
    started, release = _blocking_process(s, monkeypatch)
    before = s.frame()
    assert started.wait(10)
    s.stamp -= 50 * PERIOD
    received = s.runner.cameras[0].received
    jumped = s.frame()
    assert wait_until(lambda: s.runner.cameras[0].received > received, 10)
    release.set()
    s.wait_published(before)
    grid = s.wait_published(jumped)
    assert s.runner.faults["time_jump_back"] == faults["time_jump_back"] + 1  # once, though both cameras saw it
    assert s.runner.faults["tf_time_jump_back"] == faults["tf_time_jump_back"] + 1
    # only this rig frame: the keyframes of the frame in flight belong to the old timeline
    assert grid.head == "mv" and grid.num_views == 2
    assert s.fresh_frame().num_views == 4
    assert s.runner.drops["tf_late"] == drops["tf_late"]  # the jumped frame found its pose


def test_images_faster_than_processing_keep_the_newest(system, monkeypatch):
    """A burst arrives while a frame is processed: the newest is processed, each older one counted."""
    s = system
    started, release = _blocking_process(s, monkeypatch)
    superseded = s.runner.drops["superseded"]
    first = s.frame()
    assert started.wait(10)
    received = [c.received for c in s.runner.cameras]
    burst = [s.frame() for _ in range(4)]
    assert wait_until(lambda: all(c.received == r + 4 for c, r in zip(s.runner.cameras, received)), 10)
    release.set()
    s.wait_published(first)
    s.wait_published(burst[-1])
    # processed in order, so anything older that was to come would have come before the newest
    assert not any(s.published(t) for t in burst[:-1])
    assert s.runner.drops["superseded"] >= superseded + 3  # one left image per skipped frame, and right ones


def test_an_image_arriving_while_the_frame_is_taken_is_not_lost(system, monkeypatch):
    """An image that arrives while the step decodes the pending one must still be processed (or counted)."""
    s = system
    real = s.runner._frame
    target = s.stamp + PERIOD
    entered = threading.Event()

    def frame(cam, img, *args):
        if cam.index == 0 and img.stamp_ns == target and not entered.is_set():
            entered.set()
            received = s.runner.cameras[0].received
            # let the next image arrive now if it can (it must not be lost between taking and clearing)
            wait_until(lambda: s.runner.cameras[0].received > received, 1.0)
        return real(cam, img, *args)

    monkeypatch.setattr(s.runner, "_frame", frame)
    superseded = s.runner.drops["superseded"]
    # all of the first rig frame but its left image is in, so that the step goes through at once
    first = s.next_stamp()
    assert first == target
    s.pose(first)
    received = s.runner.cameras[1].received
    for cam in (0, 1):
        s.info(cam, first)
    s.image(1, first)
    assert wait_until(lambda: s.runner.cameras[1].received > received and s.has_pose(first), 10)
    s.image(0, first)
    assert entered.wait(10)
    second = s.frame()
    s.wait_published(second, timeout=20)
    # either both frames were processed, or the first was superseded and counted as such
    assert s.published(first) is not None or s.runner.drops["superseded"] > superseded


def test_cuda_out_of_memory_skips_the_frame_and_halves_the_query_memory(system, monkeypatch, caplog):
    s = system
    real = s.runner.process
    calls = []

    def process(*args: Any, **kwargs: Any):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(s.runner, "process", process)
    memory = query_memory_mb(s.runner.cfg, s.runner.stages.device)
    drops = s.runner.drops["cuda_oom"]
    with caplog.at_level(logging.WARNING, logger="kdbts_ros"):
        stamp = s.frame()
        s.wait_drop("cuda_oom", drops)
    assert s.published(stamp) is None
    assert s.node.cfg.model.query_memory_mb == memory // 2
    deadline = time.monotonic() + 5.0  # the inference thread sets the parameter just after the step
    while s.node.get_parameter("model.query_memory_mb").value != memory // 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.node.get_parameter("model.query_memory_mb").value == memory // 2
    assert any("CUDA out of memory; frame skipped, query memory now" in r.getMessage() for r in caplog.records)
    s.fresh_frame()
    assert len(calls) == 2


# ---------------------------------------------------------------- lifecycle


def test_a_bad_checkpoint_fails_configure_and_a_fixed_one_configures(checkpoint, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage" + bytes(64))
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=200 + os.getpid() % 30)  # unheard by the fixture's node
    try:
        node = _node(ctx, {"model.checkpoint": str(bad), "model.image_height": 64, "model.image_width": 192})
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
            assert node.runner is None and node._state_machine.current_state[1] == "unconfigured"
            node._publish_diagnostics()  # the diagnostics timer does not exist, but must not crash either
            # parameters can be set while unconfigured; a refused atomic set changes nothing
            assert not node.set_parameters_atomically(
                [Parameter("grid.resolution", value=1.0), Parameter("grid.x_min", value=50.0)]
            ).successful
            assert node.cfg.grid.resolution == 0.2 and node.cfg.grid.x_min == -9.0
            # the checkpoint path is start-up only; the file itself can be fixed and configure retried
            refused = node.set_parameters([Parameter("model.checkpoint", value=str(checkpoint))])[0]
            assert not refused.successful and "start-up" in refused.reason
            bad.write_bytes(checkpoint.read_bytes())
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            assert node.runner is not None and node._state_machine.current_state[1] == "active"
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_a_deactivated_node_counts_images_as_inactive_and_resumes(system):
    s = system
    s.fresh_frame()
    assert s.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    try:
        inactive = s.runner.drops["inactive"]
        processed = s.runner.processed
        stamps = [s.frame() for _ in range(2)]
        assert wait_until(lambda: s.runner.drops["inactive"] >= inactive + 4, 10)  # both cameras' images
        report = s.wait_diagnostics(lambda m: int(_values(m).get("dropped_inactive", 0)) >= inactive + 4)
        assert int(_values(report)["frames_processed"]) == processed
        assert s.runner.processed == processed and not any(s.published(t) for t in stamps)
    finally:
        assert s.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    s.fresh_frame()


def test_parameters_and_tf_flow_while_a_frame_is_processed(system, monkeypatch):
    """Inference has its own callback group: the parameter service and TF are served meanwhile."""
    s = system
    started, release = _blocking_process(s, monkeypatch)
    stamp = s.frame()
    assert started.wait(10)
    try:
        client = s.probe.create_client(SetParameters, "/kdbts_node/set_parameters")
        assert client.wait_for_service(timeout_sec=10)
        request = SetParameters.Request(parameters=[Parameter("keyframe.angle", value=7.5).to_parameter_msg()])
        t0 = time.monotonic()
        future = client.call_async(request)
        assert wait_until(future.done, 10)
        answered = time.monotonic() - t0
        tf_stamp = stamp + PERIOD // 2
        t0 = time.monotonic()
        s.pose(tf_stamp)
        assert wait_until(lambda: s.has_pose(tf_stamp), 10)
        tf_in = time.monotonic() - t0
        # all of it while the frame was still being processed (process waits for release)
        assert not release.is_set() and s.published(stamp) is None
        assert future.result().results[0].successful and answered < 2.0 and tf_in < 2.0
        # accepted at once, applied between frames
        assert s.node.get_parameter("keyframe.angle").value == 7.5 and s.node.cfg.keyframe.angle == 5.0
    finally:
        release.set()
    s.wait_published(stamp)
    assert wait_until(lambda: s.node.cfg.keyframe.angle == 7.5, 5)
    s.probe.destroy_client(client)
    s.fresh_frame()


# ---------------------------------------------------------------- parameters and outputs


def test_runtime_parameters_are_validated_and_applied_between_frames(system, monkeypatch):
    s = system
    node = s.node
    assert node.set_parameters([Parameter("grid.x_max", value=3.0)])[0].successful
    stamp = s.frame()
    grid = s.wait_published(stamp, OCC)
    assert grid.info.width == (3.0 + 9.0) / 0.5  # the grid shrank at the next frame
    assert node.set_parameters([Parameter("mode", value="sv")])[0].successful
    grid = s.fresh_frame()
    assert grid.head == "sv" and grid.num_views == 1 and grid.size_x == 24
    # refused, with the reason: out of range, against another field, unavailable head, start-up only
    out_of_range = node.set_parameters([Parameter("grid.resolution", value=50.0)])[0]
    assert not out_of_range.successful and "grid.resolution out of range" in out_of_range.reason
    crossed = node.set_parameters([Parameter("grid.x_min", value=5.0)])[0]
    assert not crossed.successful and "below its max" in crossed.reason
    monkeypatch.setattr(s.runner.stages.model, "available_heads", ["sv"])
    no_head = node.set_parameters([Parameter("mode", value="mv")])[0]
    assert not no_head.successful and "needs a multi-view head" in no_head.reason
    monkeypatch.undo()
    start_only = node.set_parameters([Parameter("model.image_width", value=320)])[0]
    assert not start_only.successful and "start-up" in start_only.reason
    assert node.get_parameter("grid.x_min").value == -9.0 and node.get_parameter("mode").value == "sv"
    # put things back: grid and multi-view head again
    results = node.set_parameters([Parameter("grid.x_max", value=9.0), Parameter("mode", value="auto")])
    assert all(r.successful for r in results)
    grid = s.fresh_frame()
    assert grid.size_x == 36 and grid.head == "mv"


def test_a_rejected_atomic_parameter_set_changes_nothing(system):
    s = system
    result = s.node.set_parameters_atomically(
        [Parameter("grid.resolution", value=1.0), Parameter("grid.x_min", value=50.0)]
    )
    assert not result.successful and "below its max" in result.reason
    grid = s.fresh_frame()  # a frame later, nothing of the refused set may have been applied
    assert s.node.get_parameter("grid.resolution").value == 0.5
    assert s.node.cfg.grid.resolution == 0.5 and grid.resolution == pytest.approx(0.5)


def test_publish_toggle_stops_an_output_and_its_computation(system):
    s = system
    toggles = [Parameter("publish.depth", value=False), Parameter("publish.depth_confidence", value=False)]
    assert all(r.successful for r in s.node.set_parameters(toggles))
    assert wait_until(lambda: not (s.node.cfg.publish.depth or s.node.cfg.publish.depth_confidence), 5)
    depth_count = len(s.got[DEPTH])
    stamp = s.frame()
    s.wait_published(stamp, OCC)
    s.wait_published(stamp)
    assert len(s.got[DEPTH]) == depth_count and s.published(stamp, DEPTH_INFO) is None
    assert s.published(stamp, CONFIDENCE) is None
    assert s.runner.last.stamp_ns == stamp and s.runner.last.depth is None
    # the confidence alone: the depth is rendered for it, the depth image and its camera_info stay off
    assert s.node.set_parameters([Parameter("publish.depth_confidence", value=True)])[0].successful
    # the node reads its toggles just before the runner applies accepted changes: wait for them to be in
    assert wait_until(lambda: s.node.cfg.publish.depth_confidence, 5)
    stamp = s.frame()
    s.wait_published(stamp, CONFIDENCE)
    assert s.published(stamp, DEPTH) is None and s.published(stamp, DEPTH_INFO) is None
    assert s.node.set_parameters([Parameter("publish.depth", value=True)])[0].successful
    assert wait_until(lambda: s.node.cfg.publish.depth, 5)
    s.wait_published(s.frame(), DEPTH)


def test_outputs_nobody_subscribes_to_are_not_computed(system):
    s = system
    depth_pub = s.node.pubs[DEPTH]
    for topic in DEPTH_OUTPUTS:
        s.unsubscribe(topic)
    try:
        assert wait_until(lambda: all(s.node.pubs[t].get_subscription_count() == 0 for t in DEPTH_OUTPUTS), 10)
        stamp = s.frame()
        s.wait_published(stamp)
        occupancy = s.wait_published(stamp, OCC)
        assert s.runner.last.stamp_ns == stamp and s.runner.last.depth is None
        # the grid is still computed: the occupancy published is this frame's
        np.testing.assert_array_equal(np.asarray(occupancy.data, np.int8), s.runner.last.occupancy.reshape(-1))
    finally:
        for topic in DEPTH_OUTPUTS:
            s.subscribe(topic)
    assert wait_until(lambda: depth_pub.get_subscription_count() > 0, 10)
    stamp = s.frame()
    depth = s.wait_published(stamp, DEPTH)
    # computed again, for this frame, and published as computed
    assert s.runner.last.stamp_ns == stamp
    np.testing.assert_array_equal(
        np.frombuffer(bytes(depth.data), "<f4").reshape(depth.height, depth.width),
        s.runner.last.depth.astype(np.float32),
    )


def test_latency_is_published_and_warns_above_the_budget(system):
    s = system
    count = len(s.got["/kdbts/latency"])
    # the test's stamps advance 0.1 s a frame, slower than the clock: catch up (a step forward is no fault)
    s.stamp = max(s.stamp, time.time_ns() - PERIOD)
    s.fresh_frame()
    assert wait_until(lambda: len(s.got["/kdbts/latency"]) > count, 5)
    latency = s.got["/kdbts/latency"][-1].data
    assert 0.0 <= latency < 60.0
    assert s.node.set_parameters([Parameter("latency_budget", value=0.0)])[0].successful
    assert wait_until(lambda: s.node.cfg.latency_budget == 0.0, 5)
    report = s.wait_diagnostics(lambda m: "above budget" in m.status[0].message).status[0]
    assert report.level == DiagnosticStatus.WARN
    assert report.message.startswith("latency") and "above budget 0.0 s" in report.message
    assert s.node.set_parameters([Parameter("latency_budget", value=60.0)])[0].successful
    s.fresh_frame()
