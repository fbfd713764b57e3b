"""Serialized messages in, serialized outputs out: the logic the node, demo and replay share.

The runner takes CDR bytes of Image, CameraInfo and TF messages, pairs each
image with its intrinsics and its pose at the image stamp, runs the pipeline and
returns the output messages as CDR bytes. Every input it cannot use is counted
by reason, so nothing is lost silently.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import messages as M
from .config import PipelineConfig
from .core.pipeline import Frame, Outputs, Pipeline
from .core.tf_buffer import TfBuffer, TfError

log = logging.getLogger("kdbts_ros")
DIAGNOSTICS_PERIOD_NS = 1_000_000_000  # the node publishes diagnostics at 1 Hz


@dataclass
class _Pending:
    frame: Frame
    arrival_ns: int
    decode_s: float


class FrameRunner:
    """Holds the newest unprocessed frame, the TF buffer, the intrinsics and the counters.

    A frame waits (up to ``tf_timeout``) for its camera_info and for its pose at
    the image stamp; both are resolved in :meth:`step`, never in a callback.
    """

    def __init__(self, cfg: PipelineConfig, pipeline: Pipeline | None = None):
        self.cfg = cfg
        self.pipeline = pipeline or Pipeline(cfg)
        self.tf = TfBuffer()
        self.intrinsics: tuple[np.ndarray, int, int, str] | None = None
        self.pending: _Pending | None = None
        self.drops: Counter[str] = Counter()
        self.processed = 0
        self.last_stamp_ns: int | None = None
        self.latencies: list[float] = []
        self.last: Outputs | None = None

    # ------------------------------------------------------------ inputs
    def on_camera_info(self, data: bytes) -> None:
        """Take intrinsics from a CameraInfo (P for rectified images, else K)."""
        try:
            info = M.camera_info_intrinsics(M.deserialize(data, "sensor_msgs/msg/CameraInfo"))
        except M.ConversionError as exc:
            self._drop("bad_camera_info", str(exc))
            return
        if self.intrinsics is None:
            log.info("intrinsics from camera_info %s: fx %.2f fy %.2f cx %.2f cy %.2f (%dx%d)",
                     info[3], info[0][0, 0], info[0][1, 1], info[0][0, 2], info[0][1, 2], info[1], info[2])
        self.intrinsics = info

    def on_tf(self, data: bytes, static: bool) -> None:
        """Add the transforms of a TFMessage; non-finite or non-rigid ones are counted and skipped."""
        try:
            items = M.tf_transforms(M.deserialize(data, "tf2_msgs/msg/TFMessage"))
        except M.ConversionError as exc:
            self._drop("bad_tf", str(exc))
            return
        for parent, child, stamp, T, problem in items:
            if problem:
                self._drop("bad_tf", f"{parent}->{child}: {problem}")
                continue
            self.tf.set_transform(parent, child, stamp, T, static)

    def handle(self, topic: str, data: bytes, arrival_ns: int) -> None:
        """Dispatch one serialized input message by topic, as the node's subscriptions do."""
        if topic in ("/tf", "/tf_static"):
            self.on_tf(data, topic == "/tf_static")
        elif topic == self.cfg.topics.camera_info:
            self.on_camera_info(data)
        elif topic == self.cfg.topics.image:
            self.on_image(data, arrival_ns)

    def on_image(self, data: bytes, arrival_ns: int) -> None:
        """Decode an Image and make it the pending frame (a still-pending older one is dropped)."""
        t0 = time.perf_counter()
        try:
            msg = M.deserialize(data, "sensor_msgs/msg/Image")
            rgb = M.image_to_rgb(msg)
        except M.ConversionError as exc:
            self._drop("bad_image", str(exc))
            return
        stamp = M.stamp_ns(msg.header.stamp)
        if self.last_stamp_ns is not None and stamp < self.last_stamp_ns:
            self._drop("time_jump_back", "image stamp went backwards; window and TF history cleared")
            self.tf.clear()  # the window clears itself when the next frame enters it
            self.pending = None
        self.last_stamp_ns = stamp
        if self.pending is not None:
            self._drop("superseded", "a newer image arrived before the previous one was processed")
        self.pending = _Pending(Frame(rgb, None, stamp, msg.header.frame_id.lstrip("/")), arrival_ns,
                                time.perf_counter() - t0)

    # ------------------------------------------------------------ processing
    def step(self, now_ns: int, want_grid: bool = True, want_depth: bool = True
             ) -> list[tuple[str, str, bytes]]:
        """Process the pending frame once its pose is known; returns (topic, msgtype, bytes)."""
        p = self.pending
        if p is None:
            return []
        waited = (now_ns - p.arrival_ns) * 1e-9
        if p.frame.K is None:
            # camera_info travels on its own topic and may arrive just after the image
            if self.intrinsics is None:
                if waited >= self.cfg.tf_timeout:
                    self.pending = None
                    self._drop("no_camera_info", "no camera_info received; waiting for intrinsics")
                return []
            K, w, h, _ = self.intrinsics
            if (w, h) != (p.frame.image.shape[1], p.frame.image.shape[0]):
                self.pending = None
                self._drop("size_mismatch", f"image {p.frame.image.shape[1]}x{p.frame.image.shape[0]} "
                           f"but camera_info {w}x{h}")
                return []
            p.frame.K = K
        try:
            p.frame.T_fixed_cam = self.tf.lookup(self.cfg.fixed_frame, p.frame.frame_id, p.frame.stamp_ns)
        except TfError as exc:
            if exc.reason in ("future", "unknown_frame", "disconnected") and waited < self.cfg.tf_timeout:
                return []  # the transform may still arrive: retry on the next step
            self.pending = None
            self._drop(f"tf_{exc.reason}", f"no pose for {p.frame.frame_id} in {self.cfg.fixed_frame}: {exc}")
            return []
        self.pending = None
        try:
            out = self.pipeline.process(p.frame, want_depth=want_depth, want_grid=want_grid)
        except Exception as exc:  # a failed frame must not stop the node or a replay
            self._drop("processing_error", f"{type(exc).__name__}: {exc}")
            return []
        t0 = time.perf_counter()
        messages = [(topic, msgtype, M.serialize(msg)) for topic, msgtype, msg in M.output_messages(out, self.cfg.topics)]
        out.timings = {"decode": p.decode_s, **out.timings, "messages": time.perf_counter() - t0}
        self.last = out
        self.processed += 1
        return messages

    def record_latency(self, seconds: float) -> None:
        """Keep the publish-minus-stamp latency of recent frames."""
        self.latencies = (self.latencies + [seconds])[-100:]

    def _drop(self, reason: str, message: str) -> None:
        self.drops[reason] += 1
        log.warning("dropped (%s, %d so far): %s", reason, self.drops[reason], message)

    # ------------------------------------------------------------ reporting
    def diagnostics(self, stamp_ns: int) -> bytes:
        """DiagnosticArray bytes: counts, latency against the budget, head and views."""
        lat = np.asarray(self.latencies) if self.latencies else np.zeros(1)
        level, message = "OK", "running"
        if self.processed == 0:
            level, message = "WARN", "no frame processed yet"
        elif lat.max() > self.cfg.latency_budget:
            level, message = "WARN", f"latency {lat.max():.3f} s above budget {self.cfg.latency_budget} s"
        values: dict[str, object] = {"frames_processed": self.processed,
                                     "latency_last_s": f"{lat[-1]:.4f}", "latency_max_s": f"{lat.max():.4f}",
                                     "latency_median_s": f"{np.median(lat):.4f}",
                                     "dropped_total": sum(self.drops.values()),
                                     "head": self.last.head if self.last else "",
                                     "num_views": self.last.num_views if self.last else 0,
                                     "weights": self.pipeline.model_info.get("weights", ""),
                                     "device": str(self.pipeline.device)}
        values.update({f"dropped_{k}": v for k, v in sorted(self.drops.items())})
        if self.last:
            values.update({f"time_{k}_s": f"{v:.4f}" for k, v in self.last.timings.items()})
        return M.serialize(M.diagnostics(stamp_ns, "kdbts_ros: density field", "kdbts_node", level, message,
                                         values))


class MessageSink(Protocol):
    """Where :func:`run_messages` writes (a :class:`kdbts_ros.data.bags.BagWriter`)."""

    def write(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None: ...


def run_messages(runner: FrameRunner, messages: Iterable[tuple[int, str, str, bytes]], sink: MessageSink,
                 on_output: Callable[[Outputs], None] | None = None) -> Outputs | None:
    """Feed (stamp, topic, msgtype, bytes) in time order to the runner as the node does; write inputs and outputs.

    Each input goes to the callback the node subscribes for its topic, and the runner steps at
    each message's stamp (the node's clock under use_sim_time); outputs are written at that
    stamp, ``/diagnostics`` every second of message time and once at the end. A frame still
    waiting for its pose after the last message is stepped once more ``tf_timeout`` later, as
    the node's timer would. Returns the outputs of the last processed frame.
    """
    cfg = runner.cfg
    last: Outputs | None = None

    def step(now: int) -> None:
        nonlocal last
        before = runner.processed
        for out_topic, out_type, out_data in runner.step(now):
            sink.write(out_topic, out_type, now, out_data)
        if runner.processed > before:
            last = runner.last
            if on_output is not None:
                on_output(last)

    stamp, next_diag = None, None
    for stamp, topic, msgtype, data in messages:
        sink.write(topic, msgtype, stamp, data)
        runner.handle(topic, data, stamp)
        step(stamp)
        next_diag = stamp + DIAGNOSTICS_PERIOD_NS if next_diag is None else next_diag
        if stamp >= next_diag:
            sink.write("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", stamp, runner.diagnostics(stamp))
            next_diag += DIAGNOSTICS_PERIOD_NS
    if stamp is None:
        raise ValueError("no messages to run")
    if runner.pending is not None:
        stamp = max(stamp, runner.pending.arrival_ns + int(cfg.tf_timeout * 1e9))
        step(stamp)
    sink.write("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", stamp, runner.diagnostics(stamp))
    return last
