"""The rclpy node in this process for the benchmarks: started with a configuration, fed and read by rclpy."""

from __future__ import annotations

import threading
import time
from typing import Protocol

from kdbts_ros.core.loading import build_model
from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.messages.topics import OUTPUTS
from kdbts_ros.runtime.config import RunnerConfig
from kdbts_ros.runtime.runner import FrameRunner


def can_publish() -> bool:
    """Whether rclpy and the built DensityGrid message are importable, so the node itself can run here."""
    try:
        import rclpy  # noqa: F401

        from kdbts_ros.msg import DensityGrid  # noqa: F401
    except ImportError:
        return False
    return True


def start_node(cfg: RunnerConfig, context):
    """The rclpy KdbtsNode in this process with cfg as its parameters, configured and active."""
    from rclpy.parameter import Parameter

    from kdbts_ros.core.settings import iter_params
    from kdbts_ros.ros.node import KdbtsNode

    try:
        build_model(cfg)  # a checkpoint the node could not load is reported here, once, as the tools report it
    except BaseException:
        context.try_shutdown()
        raise
    params = [Parameter(s.name, value=s.default) for s in iter_params(cfg)]
    node = KdbtsNode(context=context, parameter_overrides=params)
    node.trigger_configure()
    node.trigger_activate()
    if node.runner is None:
        raise RuntimeError("the node failed to configure (see its log)")
    return node


def wait_for_subscribers(publishers, seconds: float = 10.0) -> None:
    """Block until every publisher has a subscriber, so that nothing is published into the void."""
    deadline = time.monotonic() + seconds
    while any(p.get_subscription_count() == 0 for p in publishers):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the benchmark's subscribers were not discovered within {seconds:g} s")
        time.sleep(0.05)


class NodePublisher:
    """The rclpy node itself, with a subscriber on every output so it computes and publishes all of them."""

    def __init__(self, cfg: RunnerConfig):
        import rclpy

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = start_node(cfg, self.context)
        self.sink = rclpy.create_node("kdbts_bench_sink", context=self.context)
        for topic, pub in self.node.pubs.items():
            self.sink.create_subscription(pub.msg_type, topic, lambda _msg: None, 5, raw=True)
        wait_for_subscribers(self.node.pubs.values())

    @property
    def runner(self) -> FrameRunner:
        return self.node.runner

    def step(self, now_ns: int) -> None:
        self.node.step()

    def close(self) -> None:
        self.sink.destroy_node()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)


class Deliveries(Protocol):
    """What the soak records per frame: when it was sent and when each output arrived."""

    def sent(self, stamp: int) -> None: ...

    def arrived(self, stamp: int, now_ns: int) -> None: ...


class RigFrames(Protocol):
    """Serialized inputs of rig frame i: the static TF once, then TF and (camera_info, image) per camera."""

    def static_tf(self) -> bytes: ...

    def messages(self, i: int, stamp: int) -> tuple[bytes, list[tuple[bytes, bytes]]]: ...


class SoakHarness:
    """The node in its own executor, a source node that publishes the inputs, and a sink on every output."""

    def __init__(self, cfg: RunnerConfig, frames: RigFrames, domain_id: int):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        from tf2_msgs.msg import TFMessage

        self.rclpy, self.cfg = rclpy, cfg
        self.context = rclpy.Context()
        # a domain of its own: another node on this machine must not feed or read this one
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = start_node(cfg, self.context)
        self.deliveries: Deliveries | None = None
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.sink = rclpy.create_node("kdbts_soak_sink", context=self.context)
        # the per-frame outputs: latency has no header, and the world map is published at its own rate
        frame_outputs = {o.topic(self.node.cfg.topics) for o in OUTPUTS if o.stage in ("grid", "depth")}  # resolved
        self.outputs = [t for t in self.node.pubs if t in frame_outputs]
        for topic, pub in self.node.pubs.items():
            callback = self._on_output if topic in self.outputs else (lambda _data: None)
            self.sink.create_subscription(pub.msg_type, topic, callback, reliable, raw=True)

        self.source = rclpy.create_node("kdbts_soak_source", context=self.context)
        self.tf = self.source.create_publisher(
            TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        )
        tf_static = self.source.create_publisher(
            TFMessage,
            "/tf_static",
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
        )
        # reliable publishers reach best-effort subscriptions too (the node's default input QoS)
        sensor = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.cameras = [
            (
                self.source.create_publisher(CameraInfo, info, sensor),
                self.source.create_publisher(
                    CompressedImage if sensor_data.image_msgtype(img) == cdr.COMPRESSED_IMAGE else Image, img, sensor
                ),
            )
            for img, info in zip(cfg.topics.images, cfg.topics.camera_infos)
        ]
        self.frames = frames
        wait_for_subscribers(
            list(self.node.pubs.values()) + [self.tf, tf_static] + [p for pair in self.cameras for p in pair]
        )
        tf_static.publish(self.frames.static_tf())

        self.executors = [
            SingleThreadedExecutor(context=self.context),  # as kdbts_node's main
            SingleThreadedExecutor(context=self.context),
        ]
        self.executors[0].add_node(self.node)
        self.executors[1].add_node(self.sink)
        self._spinning = True
        self.threads = [threading.Thread(target=self._spin, args=(e,), daemon=True) for e in self.executors]
        for thread in self.threads:
            thread.start()

    def _spin(self, executor) -> None:
        # Executor.shutdown does not wait for a spinning thread; this loop is ended and joined first
        while self._spinning:
            executor.spin_once(timeout_sec=0.1)

    def _on_output(self, data: bytes) -> None:
        now = time.time_ns()
        if self.deliveries is not None:
            self.deliveries.arrived(cdr.header_stamp_ns(data), now)

    def publish(self, i: int, stamp: int) -> None:
        """Publish rig frame i with the given stamp (wall clock, increasing from frame to frame)."""
        assert self.deliveries is not None  # the soak sets its record before it publishes
        self.deliveries.sent(stamp)
        tf, per_camera = self.frames.messages(i, stamp)
        self.tf.publish(tf)
        for (info_pub, image_pub), (info, image) in zip(self.cameras, per_camera):
            info_pub.publish(info)
            image_pub.publish(image)

    def stop(self) -> None:
        """Stop the executors, so that the node's counters hold still."""
        self._spinning = False
        for thread in self.threads:
            thread.join(timeout=10)
        for executor in self.executors:
            executor.shutdown()

    def close(self) -> None:
        self.stop()
        self.source.destroy_node()
        self.sink.destroy_node()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)
