"""Serialized messages in, serialized outputs out: the logic the node, demo and replay share.

The runner takes CDR bytes of images (raw or compressed) and camera_info of any
number of cameras and of TF messages. The first camera's newest image is the
frame the outputs are made for; the other cameras' images closest in time join
it as one rig frame. Each image waits (up to ``tf_timeout``) for its intrinsics
and its pose at the image stamp; both are resolved in :meth:`FrameRunner.step`,
never in a callback. Every input it cannot use is counted by reason, and every
fault it works around is counted too, so nothing is lost silently.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from kdbts_ros.messages import cdr, published, sensor_data
from kdbts_ros.core.config import PipelineConfig, iter_params, set_param, set_params
from kdbts_ros.core.frames import Frame, Outputs
from kdbts_ros.core.pipeline import Pipeline
from kdbts_ros.core.tf_buffer import TfBuffer, TfError, TfStore

log = logging.getLogger("kdbts_ros")
DIAGNOSTICS_PERIOD_NS = 1_000_000_000  # the node publishes diagnostics at 1 Hz
LOG_PERIOD_S = 5.0                     # a repeated warning is logged at most this often per reason
SECONDARY_QUEUE = 4                    # images kept per other camera while they wait for a partner
TIME_JUMP_NS = 1_000_000_000           # a step back in time beyond this is a jump (a bag looped), not reordering


@dataclass
class _Image:
    msg: Any          # the deserialized Image or CompressedImage (decoded only when used)
    stamp_ns: int
    arrival_ns: int
    rgb: np.ndarray | None = None  # kept once decoded, while the frame waits for its partners
    decode_s: float = 0.0


class _Camera:
    """One camera: its topics, intrinsics, last image format and images waiting to be used."""

    def __init__(self, index: int, image_topic: str, info_topic: str):
        self.index, self.image_topic, self.info_topic = index, image_topic, info_topic
        self.msgtype = sensor_data.image_msgtype(image_topic)
        self.intrinsics: tuple[np.ndarray, int, int, str] | None = None
        self.format: tuple[str, int, int] | None = None
        self.waiting: deque[_Image] = deque()
        self.received = 0
        self.dropped: Counter[str] = Counter()  # this camera's received images lost, by reason
        self.last_stamp_ns: int | None = None
        self.absent = False  # missed a rig frame: not waited for until it sends again


class _Throttle:
    """Log a repeated warning at most once per period and reason, with its running count."""

    def __init__(self, period_s: float = LOG_PERIOD_S):
        self.period_s = period_s
        self.last: dict[str, float] = {}

    def warn(self, reason: str, count: int, message: str) -> None:
        now = time.monotonic()
        if now - self.last.get(reason, -np.inf) >= self.period_s:
            self.last[reason] = now
            log.warning("%s (%s: %d so far)", message, reason, count)


class _Wait(Exception):
    """A frame's pose, intrinsics or partner image may still arrive: try again on the next step."""


class _Dropped(Exception):
    """An image cannot be used; the reason has been counted."""


class FrameRunner:
    """Holds the cameras' waiting images, the TF buffer and the counters; the pipeline's window picks keyframes."""

    def __init__(self, cfg: PipelineConfig, pipeline: Pipeline | None = None, tf: TfStore | None = None,
                 tf_name: str | None = None):
        """``tf`` defaults to the built-in buffer; ``ros.tf_store.frame_runner`` passes tf2_ros's where installed."""
        self.cfg = cfg
        self.pipeline = pipeline or Pipeline(cfg)
        self.tf, self.tf_name = (tf, tf_name or type(tf).__name__) if tf is not None else \
            (TfBuffer.from_seconds(cfg.tf_cache, cfg.tf_extrapolation), "builtin")
        self.cameras = [_Camera(i, img, info) for i, (img, info) in
                        enumerate(zip(cfg.topics.images, cfg.topics.camera_infos))]
        self._image_topics = {c.image_topic: c.index for c in self.cameras}
        self._info_topics = {c.info_topic: c.index for c in self.cameras}
        self.drops: Counter[str] = Counter()    # inputs lost, by reason
        self.faults: Counter[str] = Counter()   # problems worked around, nothing lost
        self._reported: Counter[str] = Counter()
        self._throttle = _Throttle()
        self.processed = 0
        self.latencies: deque[float] = deque(maxlen=100)
        self.last: Outputs | None = None
        self.timings: dict[str, float] = {}  # seconds per stage of the last processed frame
        self._tf_newest: int | None = None
        # the node's callbacks (images, camera_info, TF) run in other threads than step: the queues, the TF
        # buffer and the counters change only under this lock (re-entrant: _drop is called with it held);
        # the window is cleared by the inference thread only
        self._lock = threading.RLock()
        self._clear_window = False
        self._in_hand: _Image | None = None  # the image the step thread is preparing
        self._param_lock = threading.Lock()
        self._next_cfg: PipelineConfig | None = None  # accepted run-time changes, applied between frames
        self._changed: set[str] = set()
        self._own_changes: list[tuple[str, Any]] = []  # changes the runner made itself, for the node to show

    @property
    def pending(self) -> _Image | None:
        """The output camera's newest image not yet processed."""
        with self._lock:
            waiting = self.cameras[0].waiting
            return waiting[-1] if waiting else None

    # ------------------------------------------------------------ inputs
    def handle(self, topic: str, data: bytes, arrival_ns: int) -> None:
        """Dispatch one serialized input message by topic, as the node's subscriptions do."""
        if topic in ("/tf", "/tf_static"):
            self.on_tf(data, topic == "/tf_static")
        elif topic in self._info_topics:
            self.on_camera_info(self._info_topics[topic], data)
        elif topic in self._image_topics:
            self.on_image(self._image_topics[topic], data, arrival_ns)

    def on_camera_info(self, camera: int, data: bytes) -> None:
        """Take a camera's intrinsics from a CameraInfo (P for rectified images, else K)."""
        cam = self.cameras[camera]
        try:
            info = sensor_data.camera_info_intrinsics(cdr.deserialize(data, "sensor_msgs/msg/CameraInfo"))
        except cdr.ConversionError as exc:
            self._drop("bad_camera_info", f"{cam.info_topic}: {exc}")
            return
        with self._lock:  # step reads K and size as one
            old = cam.intrinsics
            if old is None:
                log.info("intrinsics from %s (%s): fx %.2f fy %.2f cx %.2f cy %.2f (%dx%d)", cam.info_topic, info[3],
                         info[0][0, 0], info[0][1, 1], info[0][0, 2], info[0][1, 2], info[1], info[2])
            elif old[1:3] != info[1:3] or not np.allclose(old[0], info[0]):
                self._fault("camera_info_changed", f"{cam.info_topic}: intrinsics changed from fx {old[0][0, 0]:.2f} "
                            f"{old[1]}x{old[2]} to fx {info[0][0, 0]:.2f} {info[1]}x{info[2]}")
            cam.intrinsics = info

    def on_tf(self, data: bytes, static: bool) -> None:
        """Add the transforms of a TFMessage; non-finite or non-rigid ones are counted and skipped."""
        try:
            items = sensor_data.tf_transforms(cdr.deserialize(data, "tf2_msgs/msg/TFMessage"))
        except cdr.ConversionError as exc:
            self._drop("bad_tf", str(exc))
            return
        with self._lock:
            for parent, child, stamp, T, problem in items:
                if problem:
                    self._drop("bad_tf", f"{parent}->{child}: {problem}")
                    continue
                if not static:
                    self._check_tf_time(stamp)
                self.tf.set_transform(parent, child, stamp, T, static)

    def _check_tf_time(self, stamp: int) -> None:
        """Clear the dynamic TF history when transforms go back in time (a bag looped, sim time restarted).

        Transforms of different publishers arrive slightly out of order, so only a step back
        of more than TIME_JUMP_NS counts.
        """
        if self._tf_newest is not None and stamp < self._tf_newest - TIME_JUMP_NS:
            self._fault("tf_time_jump_back", f"TF went back by {(self._tf_newest - stamp) * 1e-9:.3f} s; "
                        "dynamic TF history cleared")
            self.tf.clear()
            self._tf_newest = None
        self._tf_newest = stamp if self._tf_newest is None else max(self._tf_newest, stamp)

    def on_image(self, camera: int, data: bytes, arrival_ns: int) -> None:
        """Queue an image of a camera; the output camera keeps only its newest, older ones are dropped."""
        cam = self.cameras[camera]
        try:
            msg = cdr.deserialize(data, cam.msgtype)
        except cdr.ConversionError as exc:
            self._drop("bad_image", f"{cam.image_topic}: {exc}")
            return
        stamp = cdr.stamp_ns(msg.header.stamp)
        with self._lock:
            if cam.last_stamp_ns is not None and stamp < cam.last_stamp_ns:
                self._time_jump(cam, stamp)
            cam.last_stamp_ns = stamp
            cam.received += 1
            cam.absent = False
            if camera > 0 and self.cfg.mode == "sv":
                return  # the single-view head reads the first camera only (counted as received)
            limit = 1 if camera == 0 else SECONDARY_QUEUE
            while len(cam.waiting) >= limit:
                cam.waiting.popleft()
                self._drop("superseded", f"{cam.image_topic}: a newer image arrived before this one was processed", cam)
            cam.waiting.append(_Image(msg, stamp, arrival_ns))

    def _time_jump(self, cam: _Camera, stamp: int) -> None:
        """Time went backwards (a bag looped): forget waiting images and the window (TF checks its own stamps)."""
        self._fault("time_jump_back", f"{cam.image_topic}: stamp went back by {(cam.last_stamp_ns - stamp) * 1e-9:.3f}"
                    " s; window and waiting images cleared")
        self.discard_waiting("time_jump_back", "image from before the time jump")
        for c in self.cameras:
            c.last_stamp_ns = None  # so that the other cameras do not report the same jump again
        self._clear_window = True

    def drop_image(self, camera: int, reason: str, message: str) -> None:
        """Count an image the caller did not hand over (received and dropped, so its camera's counts add up)."""
        cam = self.cameras[camera]
        with self._lock:
            cam.received += 1
            self._drop(reason, f"{cam.image_topic}: {message}", cam)

    def discard_waiting(self, reason: str, message: str) -> None:
        """Drop every waiting image of every camera, counted under ``reason``."""
        with self._lock:
            for c in self.cameras:
                for _ in range(len(c.waiting)):
                    self._drop(reason, f"{c.image_topic}: {message}", c)
                c.waiting.clear()

    # ------------------------------------------------------------ processing
    def step(self, now_ns: int, outputs: Callable[[], Collection[str]] | None = None
             ) -> list[tuple[str, str, bytes]]:
        """Process the output camera's newest image once it can be; returns (topic, msgtype, bytes).

        Run-time parameter changes are applied first, then ``outputs`` names the output topics
        wanted (the node: those switched on that have a subscriber; None: every output). Outputs
        not wanted are neither computed nor serialized.
        """
        self.apply_params()
        wanted = None if outputs is None else set(outputs())
        if self._clear_window:
            self._clear_window = False
            self.pipeline.window.reset()
        try:
            return self._step(now_ns, wanted)
        except Exception as exc:  # whatever happens to one frame, the node's timer and a replay go on
            ref = self.cameras[0]
            with self._lock:  # not retried: one failure, one count
                if self._in_hand in ref.waiting:
                    ref.waiting.remove(self._in_hand)
            self._drop("processing_error", f"{type(exc).__name__}: {exc}", ref)
            return []

    def _step(self, now_ns: int, wanted: set[str] | None) -> list[tuple[str, str, bytes]]:
        # taken under the callbacks' lock: an image arriving between taking the pending one and removing it
        # would otherwise be lost uncounted (and a queue changing while iterated raises)
        with self._lock:
            ref = self.cameras[0]
            img = self._in_hand = self.pending
            if img is None:
                return []
            if now_ns < img.arrival_ns - TIME_JUMP_NS:
                img.arrival_ns = now_ns  # the clock went back (sim time of a looping bag): wait afresh
            timed_out = (now_ns - img.arrival_ns) * 1e-9 >= self.cfg.tf_timeout
            try:
                K, T = self._resolve(ref, img, timed_out)
                frame = self._frame(ref, img, K, T)
                partners = self._partners(img, timed_out) if self.cfg.mode != "sv" else []
            except (_Wait, _Dropped):
                return []
            if self.pending is not img:
                return []  # superseded while it was prepared (counted when it was)
            ref.waiting.remove(img)
            self._consume(img, partners)
            companions, decoded = [], [img]
            for cam, partner, K_c, T_c in partners:
                try:
                    companions.append(self._frame(cam, partner, K_c, T_c))
                    decoded.append(partner)
                except _Dropped:
                    pass
        want_grid, want_depth = published.stages_wanted(self.cfg.topics, wanted)
        try:
            out = self.pipeline.process(frame, want_depth=want_depth, want_grid=want_grid,
                                        companions=companions)
        except torch.OutOfMemoryError:
            memory, chunk = changes = self.pipeline.smaller_query_memory()
            self.change_params(changes)
            self._drop("cuda_oom", f"CUDA out of memory; frame skipped, query memory now {memory[1]} MiB, "
                       f"reference chunks {chunk[1]} points", ref)
            torch.cuda.empty_cache()
            return []
        t0 = time.perf_counter()
        messages = [(topic, msgtype, cdr.serialize(msg))
                    for topic, msgtype, msg in published.output_messages(out, self.cfg.topics, wanted)]
        # the frame's stage times, composed once here (the node adds its publish time via published())
        self.timings = {"decode": sum(d.decode_s for d in decoded), **out.stage_times,
                        "messages": time.perf_counter() - t0}
        self.last = out
        self.processed += 1
        return messages

    def _resolve(self, cam: _Camera, img: _Image, timed_out: bool) -> tuple[np.ndarray, np.ndarray]:
        """Pixel intrinsics and pose in the fixed frame of a camera's image; raises _Wait or _Dropped."""
        if cam.intrinsics is None:
            # camera_info travels on its own topic and may arrive just after the image
            if not timed_out:
                raise _Wait
            self._discard(cam, img, "no_camera_info", "no camera_info received")
        try:
            T = self.tf.lookup(self.cfg.fixed_frame, img.msg.header.frame_id.lstrip("/"), img.stamp_ns)
        except TfError as exc:
            if exc.reason in ("future", "unknown_frame", "disconnected") and not timed_out:
                raise _Wait from exc  # the transform may still arrive: retry on the next step
            reason = {"future": "tf_late", "past": "tf_too_old"}.get(exc.reason, f"tf_{exc.reason}")
            self._discard(cam, img, reason, f"no pose in {self.cfg.fixed_frame}: {exc}")
        return cam.intrinsics[0], T

    def _partners(self, img: _Image, timed_out: bool) -> list[tuple[_Camera, _Image, np.ndarray, np.ndarray]]:
        """Each other camera's image closest to ``img`` within the sync tolerance, with intrinsics and pose.

        Waits (up to ``tf_timeout``) while a camera's partner image may still come: it has
        sent images, none newer than this rig frame yet, and did not miss the last one. A
        camera without a partner is left out of this rig frame (counted).
        """
        tol = int(self.cfg.sync_tolerance * 1e9)
        found = []
        for cam in self.cameras[1:]:
            near = [w for w in cam.waiting if abs(w.stamp_ns - img.stamp_ns) <= tol]
            partner = min(near, key=lambda w: abs(w.stamp_ns - img.stamp_ns)) if near else None
            if partner is None:
                may_come = cam.received > 0 and not cam.absent and (
                    cam.last_stamp_ns is None or cam.last_stamp_ns < img.stamp_ns + tol)  # None: reset by a time jump
                if may_come and not timed_out:
                    raise _Wait
                if may_come:  # it timed out: the next rig frames do not wait for it
                    cam.absent = True
                self._fault("rig_frame_incomplete", f"no image of {cam.image_topic} within "
                            f"{self.cfg.sync_tolerance} s of the output camera's")
                continue
            try:
                K, T = self._resolve(cam, partner, timed_out)
            except _Dropped:
                continue
            found.append((cam, partner, K, T))
        return found

    def _consume(self, img: _Image, found: list[tuple[_Camera, _Image, np.ndarray, np.ndarray]]) -> None:
        """Take the partners out of their queues and drop what is older than the rig frame."""
        tol = int(self.cfg.sync_tolerance * 1e9)
        for cam in self.cameras[1:]:
            used = next((p for c, p, _, _ in found if c is cam), None)
            horizon = used.stamp_ns if used is not None else img.stamp_ns - tol
            for w in [w for w in cam.waiting if w.stamp_ns <= horizon]:
                cam.waiting.remove(w)
                if w is not used:
                    self._drop("superseded", f"{cam.image_topic}: older than the rig frame processed", cam)

    def _frame(self, cam: _Camera, img: _Image, K: np.ndarray, T: np.ndarray) -> Frame:
        """Decode an image into a Frame; format changes are counted, a size unlike camera_info drops it."""
        if img.rgb is None:
            t0 = time.perf_counter()
            try:
                img.rgb = sensor_data.decode_image(img.msg, cam.msgtype)
            except cdr.ConversionError as exc:
                self._discard(cam, img, "bad_image", f"{cam.image_topic}: {exc}")
            img.decode_s = time.perf_counter() - t0
        rgb = img.rgb
        h, w = rgb.shape[:2]
        fmt = (sensor_data.image_format(img.msg, cam.msgtype), w, h)
        if cam.format is not None and fmt != cam.format:
            self._fault("image_format_changed", f"{cam.image_topic}: {cam.format[0]} {cam.format[1]}x"
                        f"{cam.format[2]} became {fmt[0]} {w}x{h}")
        cam.format = fmt
        _, wi, hi, _ = cam.intrinsics
        if (w, h) != (wi, hi):
            self._discard(cam, img, "size_mismatch", f"{cam.image_topic}: image {w}x{h} but camera_info {wi}x{hi}")
        return Frame(rgb, K, img.stamp_ns, img.msg.header.frame_id.lstrip("/"), T)

    def _discard(self, cam: _Camera, img: _Image, reason: str, message: str) -> None:
        """Drop a waiting image for a counted reason; raises _Dropped."""
        if img in cam.waiting:
            cam.waiting.remove(img)
        self._drop(reason, message, cam)
        raise _Dropped

    def published(self, publish_s: float, latency_s: float) -> None:
        """The node published the last frame: its publish time and publish-minus-stamp latency."""
        self.timings["publish"] = publish_s
        self.latencies.append(latency_s)

    def set_param(self, name: str, value: Any) -> None:
        """Accept a run-time parameter change after validating it; raises ValueError with the reason.

        Accepted changes take effect between frames (at the next :meth:`step`), so a frame
        being processed in another thread never sees half a change.
        """
        self.set_params([(name, value)])

    def set_params(self, changes: list[tuple[str, Any]]) -> None:
        """Accept several run-time changes together or none of them (an atomic parameter set); raises ValueError."""
        with self._param_lock:
            for name, value in changes:
                problem = self.pipeline.heads.mode_problem(value) if name == "mode" else None
                if problem:
                    raise ValueError(problem)
            # staged apart from the live config, which the step thread reads
            staged = copy.deepcopy(self._next_cfg or self.cfg)
            set_params(staged, changes)
            self._next_cfg = staged
            self._changed.update(name for name, _ in changes)

    def change_params(self, changes: list[tuple[str, Any]]) -> None:
        """Make run-time changes of the runner's own (between frames, at once) and keep them for :meth:`take_own_changes`."""
        self.set_params(changes)
        self.apply_params()
        with self._param_lock:
            self._own_changes.extend(changes)

    def take_own_changes(self) -> list[tuple[str, Any]]:
        """The parameter changes the runner made itself since the last call (the node sets its parameters to them)."""
        with self._param_lock:
            changes, self._own_changes = self._own_changes, []
        return changes

    def apply_params(self) -> None:
        """Copy accepted parameter changes into the live config (whose parts the pipeline holds); between frames."""
        with self._param_lock:
            changed, names, self._next_cfg, self._changed = self._next_cfg, self._changed, None, set()
        if changed is None:
            return
        for spec in iter_params(changed):
            if spec.name in names:
                set_param(self.cfg, spec.name, spec.default, check=False)
        if "window_size" in names:
            self.pipeline.window.resize(self.cfg.window_size)

    def _drop(self, reason: str, message: str, cam: _Camera | None = None) -> None:
        """Count a lost input (and, for a received image, against its camera) and log it, throttled."""
        with self._lock:
            self.drops[reason] += 1
            count = self.drops[reason]
            if cam is not None:
                cam.dropped[reason] += 1
        self._throttle.warn(reason, count, f"dropped: {message}")

    def _fault(self, reason: str, message: str) -> None:
        with self._lock:
            self.faults[reason] += 1
            count = self.faults[reason]
        self._throttle.warn(reason, count, message)

    # ------------------------------------------------------------ reporting
    def diagnostics(self, stamp_ns: int) -> bytes:
        """DiagnosticArray bytes: counts, latency against the budget, head, views and cameras."""
        lat = np.asarray(self.latencies) if self.latencies else np.zeros(1)
        with self._lock:  # a new reason added while iterating would raise
            counts = Counter({f"dropped_{k}": v for k, v in self.drops.items()})
            counts.update({f"fault_{k}": v for k, v in self.faults.items()})
        new = {k: v - self._reported[k] for k, v in counts.items() if v > self._reported[k]}
        self._reported = counts
        level, message = "OK", "running"
        if self.processed == 0:
            level, message = "WARN", "no frame processed yet"
        elif lat.max() > self.cfg.latency_budget:
            level, message = "WARN", f"latency {lat.max():.3f} s above budget {self.cfg.latency_budget} s"
        if new:
            level = "WARN"
            message += "; since the last report: " + ", ".join(f"{k} +{v}" for k, v in sorted(new.items()))
        values: dict[str, object] = {"frames_processed": self.processed,
                                     "latency_last_s": f"{lat[-1]:.4f}", "latency_max_s": f"{lat.max():.4f}",
                                     "latency_median_s": f"{np.median(lat):.4f}",
                                     "dropped_total": sum(self.drops.values()),
                                     "head": self.last.head if self.last else "",
                                     "num_views": self.last.num_views if self.last else 0,
                                     "window_frames": len(self.pipeline.window),
                                     "weights": self.pipeline.model_info.get("weights", ""),
                                     "device": str(self.pipeline.device),
                                     "tf_buffer": self.tf_name}
        for c in self.cameras:
            values[f"camera{c.index}_topic"] = c.image_topic
            values[f"camera{c.index}_images"] = c.received
            values[f"camera{c.index}_intrinsics"] = c.intrinsics[3] if c.intrinsics else "missing"
            values[f"camera{c.index}_dropped"] = sum(c.dropped.values())
        values.update(sorted(counts.items()))
        if self.last:
            values["grid_resolution_m"] = f"{self.last.spec.resolution:.3f}"  # may differ from grid.resolution: the budget
            values.update({f"time_{k}_s": f"{v:.4f}" for k, v in self.timings.items()})
        return cdr.serialize(published.diagnostics(stamp_ns, "kdbts_ros: density field", "kdbts_node", level, message,
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
