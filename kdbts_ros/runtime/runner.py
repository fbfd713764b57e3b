"""Serialized messages in, serialized outputs out: the logic the node, demo and replay share.

The runner takes CDR bytes of images (raw or compressed) and camera_info of any
number of cameras and of TF messages, and owns everything that lives from one frame to the
next: the window of keyframes (:mod:`~kdbts_ros.runtime.window`), the head choice
(:mod:`~kdbts_ros.runtime.head_choice`), the grid budget (:mod:`~kdbts_ros.runtime.grid_budget`)
and the time-jump rule (:mod:`~kdbts_ros.runtime.time_jumps`); the network's stages
(:class:`kdbts_ros.core.stages.Stages`) keep nothing between frames. The first camera's newest image is the
frame the outputs are made for; the other cameras' images closest in time join
it as one rig frame (:mod:`kdbts_ros.runtime.cameras`). Each image waits (up to
``tf_timeout``) for its intrinsics and its pose at the image stamp; both are
resolved in :meth:`FrameRunner.step`, never in a callback. Every input it cannot
use is counted by reason, and every fault it works around is counted too
(:mod:`kdbts_ros.runtime.accounting`), so nothing is lost silently.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import torch

from kdbts_ros.core.field import Query, smaller_query_memory
from kdbts_ros.core.frames import Frame, Outputs
from kdbts_ros.core.grids import bev_occupancy, occupied_voxels, point_colours
from kdbts_ros.core.lens import Lens, depth_in
from kdbts_ros.core.loading import synced_time
from kdbts_ros.core.model import compiled
from kdbts_ros.core.stages import Stages
from kdbts_ros.core.tf_buffer import TfBuffer, TfError, TfStore
from kdbts_ros.messages import cdr, published, sensor_data, topics
from kdbts_ros.runtime.accounting import Accounting
from kdbts_ros.runtime.cameras import CameraInput, Dropped, Image, RigInputs, Wait
from kdbts_ros.runtime.config import RunnerConfig
from kdbts_ros.runtime.diagnostics import diagnostic_array
from kdbts_ros.runtime.grid_budget import GridBudget
from kdbts_ros.runtime.head_choice import HeadChoice
from kdbts_ros.runtime.mapping import MapStage
from kdbts_ros.runtime.params import ParamStage
from kdbts_ros.runtime.planner import PlannerStage
from kdbts_ros.runtime.time_jumps import TimeJumps
from kdbts_ros.runtime.window import FrameWindow


class FrameRunner:
    """The rig's waiting images, the TF buffer, the counters and every state kept across frames."""

    def __init__(
        self,
        cfg: RunnerConfig,
        stages: Stages | None = None,
        tf: TfStore | None = None,
        tf_name: str | None = None,
        node_name: str = "/" + topics.NODE_NAME,
    ):
        """``tf`` defaults to the built-in buffer; ``ros.tf_store.frame_runner`` passes tf2_ros's where installed.

        Relative topic names of ``cfg`` are taken in the root namespace (the offline tools'; the node
        resolves its own first). ``node_name``: the fully qualified name the diagnostics carry.
        """
        cfg.topics = cfg.topics.resolved()
        self.cfg = cfg
        self.node_name = node_name
        self.stages = stages or Stages(cfg)
        self.tf, self.tf_name = (
            (tf, tf_name or type(tf).__name__)
            if tf is not None
            else (TfBuffer.from_seconds(cfg.tf_cache, cfg.tf_extrapolation), "builtin")
        )
        # the node's callbacks (images, camera_info, TF) run in other threads than step: the queues, the TF
        # buffer and the counters change only under this lock (re-entrant: the counters take it again);
        # the window is changed by the inference thread only
        self._lock = threading.RLock()
        self.accounting = Accounting(self._lock)
        self.rig = RigInputs(cfg, self.accounting)
        self.cameras = self.rig.cameras
        self.window = FrameWindow(cfg.window_size, cfg.keyframe)
        self.heads = HeadChoice(cfg, self.stages.model, self.stages.device)
        self.grid_budget = GridBudget()
        self._last_grid_timing: tuple[float, float] | None = None  # (frame_s, grid_s) of the last grid frame
        self.params = ParamStage(cfg, self.stages, self.window)
        self.mapping = MapStage(cfg, self.accounting)  # the world map, while map.enabled
        self.planner = PlannerStage(cfg, self.tf, self.accounting)  # the occupancy grid in the planner's frame
        self.time_jumps = TimeJumps(cfg, self.accounting, self.rig, self.window, self.tf, self.mapping)
        self.processed = 0
        self.latencies: deque[float] = deque(maxlen=100)
        self.last: Outputs | None = None
        self.timings: dict[str, float] = {}  # seconds per stage of the last processed frame
        self._in_hand: Image | None = None  # the image the step thread is preparing

    @property
    def drops(self) -> Counter[str]:
        """Inputs lost, by reason."""
        return self.accounting.drops

    @property
    def faults(self) -> Counter[str]:
        """Problems worked around, nothing lost, by reason."""
        return self.accounting.faults

    @property
    def pending(self) -> Image | None:
        """The output camera's newest image not yet processed."""
        with self._lock:
            return self.rig.pending

    # ------------------------------------------------------------ inputs
    def handle(self, topic: str, data: bytes, arrival_ns: int) -> None:
        """Dispatch one serialized input message by its fully qualified topic, as the node's subscriptions do."""
        if topic in ("/tf", "/tf_static"):
            self.on_tf(data, topic == "/tf_static")
        elif topic in self.rig.info_topics:
            self.on_camera_info(self.rig.info_topics[topic], data)
        elif topic in self.rig.image_topics:
            self.on_image(self.rig.image_topics[topic], data, arrival_ns)

    def on_camera_info(self, camera: int, data: bytes) -> None:
        """Take a camera's lens from a CameraInfo (P for rectified images, else K and D)."""
        cam = self.cameras[camera]
        try:
            msg = cdr.deserialize(data, "sensor_msgs/msg/CameraInfo")
            info = sensor_data.camera_info_lens(msg, cam.rectified)
        except cdr.ConversionError as exc:
            self.accounting.drop("bad_camera_info", f"{cam.info_topic}: {exc}")
            return
        with self._lock:  # step reads K and size as one
            self.rig.set_intrinsics(cam, info)

    def on_tf(self, data: bytes, static: bool) -> None:
        """Add the transforms of a TFMessage; non-finite or non-rigid ones are counted and skipped."""
        try:
            items = sensor_data.tf_transforms(cdr.deserialize(data, "tf2_msgs/msg/TFMessage"))
        except cdr.ConversionError as exc:
            self.accounting.drop("bad_tf", str(exc))
            return
        with self._lock:
            for parent, child, stamp, T, problem in items:
                if problem:
                    self.accounting.drop("bad_tf", f"{parent}->{child}: {problem}")
                    continue
                assert T is not None  # tf_transforms gives None only with a problem
                if not static:
                    self.time_jumps.on_tf(stamp)
                self.tf.set_transform(parent, child, stamp, T, static)

    def on_image(self, camera: int, data: bytes, arrival_ns: int) -> None:
        """Queue an image of a camera; the output camera keeps only its newest, older ones are dropped."""
        cam = self.cameras[camera]
        try:
            msg = cdr.deserialize(data, cam.msgtype)
        except cdr.ConversionError as exc:
            self.accounting.drop("bad_image", f"{cam.image_topic}: {exc}")
            return
        stamp = cdr.stamp_ns(msg.header.stamp)
        with self._lock:
            self.time_jumps.on_image(cam, stamp)
            self.rig.queue(cam, msg, stamp, arrival_ns)

    def drop_image(self, camera: int, reason: str, message: str) -> None:
        """Count an image the caller did not hand over (received and dropped, so its camera's counts add up)."""
        with self._lock:
            self.rig.drop_image(self.cameras[camera], reason, message)

    def discard_waiting(self, reason: str, message: str) -> None:
        """Drop every waiting image of every camera, counted under ``reason``."""
        with self._lock:
            self.rig.discard_waiting(reason, message)

    # ------------------------------------------------------------ processing
    def step(self, now_ns: int, outputs: Callable[[], Collection[str]] | None = None) -> list[tuple[str, str, bytes]]:
        """Process the output camera's newest image once it can be; returns (topic, msgtype, bytes).

        Run-time parameter changes are applied first, then ``outputs`` names the output topics
        wanted (the node: those switched on that have a subscriber; None: every output). Outputs
        not wanted are neither computed nor serialized.
        """
        self.apply_params()
        wanted = None if outputs is None else set(outputs())
        try:
            return self._step(now_ns, wanted)
        except Exception as exc:  # whatever happens to one frame, the node's timer and a replay go on
            ref = self.cameras[0]
            with self._lock:  # not retried: one failure, one count
                in_hand = self._in_hand
                if in_hand is not None and in_hand in ref.waiting:
                    ref.waiting.remove(in_hand)
            self.rig.drop(ref, "processing_error", f"{type(exc).__name__}: {exc}")
            return []

    def _step(self, now_ns: int, wanted: set[str] | None) -> list[tuple[str, str, bytes]]:
        # taken under the callbacks' lock: an image arriving between taking the pending one and removing it
        # would otherwise be lost uncounted (and a queue changing while iterated raises)
        with self._lock:
            ref = self.cameras[0]
            img = self._in_hand = self.pending
            if img is None:
                return []
            if self.time_jumps.clock_went_back(now_ns, img.arrival_ns):
                img.arrival_ns = now_ns  # sim time of a looping bag: wait afresh
            timed_out = (now_ns - img.arrival_ns) * 1e-9 >= self.cfg.tf_timeout
            try:
                lens, T = self._resolve(ref, img, timed_out)
                frame = self._frame(ref, img, lens, T)
                partners = self.rig.partners(img, timed_out, self._resolve) if self.cfg.mode != "sv" else []
            except (Wait, Dropped):
                return []
            if self.pending is not img:
                return []  # superseded while it was prepared (counted when it was)
            ref.waiting.remove(img)
            self.rig.consume(img, partners)
            companions, decoded = [], [img]
            for cam, partner, lens_c, T_c in partners:
                try:
                    companions.append(self._frame(cam, partner, lens_c, T_c))
                    decoded.append(partner)
                except Dropped:
                    pass
        self.time_jumps.frame(frame.stamp_ns)  # a jump since the last frame resets window and map first
        want_grid, want_depth = topics.stages_wanted(self.cfg.topics, wanted)
        want_grid = want_grid or self.mapping.enabled  # the map fuses every frame's grid
        try:
            out = self.process(frame, want_depth=want_depth, want_grid=want_grid, companions=companions)
        except torch.OutOfMemoryError:
            memory, chunk = changes = smaller_query_memory(self.cfg, self.stages.device)
            self.change_params(changes)
            self.rig.drop(
                ref,
                "cuda_oom",
                f"CUDA out of memory; frame skipped, query memory now {memory[1]} MiB, "
                f"reference chunks {chunk[1]} points",
            )
            torch.cuda.empty_cache()
            return []
        t0 = time.perf_counter()
        messages = [
            (topic, msgtype, cdr.serialize(msg))
            for topic, msgtype, msg in published.output_messages(out, self.cfg.topics, wanted)
        ]
        # the frame's stage times, composed once here (the node adds its publish time via published())
        self.timings = {
            "decode": sum(d.decode_s for d in decoded),
            **out.stage_times,
            "messages": time.perf_counter() - t0,
        }
        if self.mapping.enabled:  # fusion and the map messages due (absent when off: outputs unchanged)
            t0 = time.perf_counter()
            messages += [
                (topic, msgtype, cdr.serialize(msg)) for topic, msgtype, msg in self.mapping.frame(out, wanted)
            ]
            self.timings["map"] = time.perf_counter() - t0
        self.last = out
        self.processed += 1
        return messages

    def process(
        self, frame: Frame, want_depth: bool = True, want_grid: bool = True, companions: Sequence[Frame] = ()
    ) -> Outputs:
        """Run one frame (and the other cameras' images of its rig frame) through the stages; build outputs.

        Every image is encoded once. When the window takes the rig frame as a keyframe its
        images stay for later frames; otherwise they are queried this once and forgotten.
        """
        with self.stages.precision():
            return self._process(frame, want_depth, want_grid, companions)

    def _process(self, frame: Frame, want_depth: bool, want_grid: bool, companions: Sequence[Frame]) -> Outputs:
        t0 = time.perf_counter()
        cfg, device, encoding = self.cfg, self.stages.device, self.stages.encoding
        assert frame.K is not None, "a frame is processed with its intrinsics"
        prepared = encoding.prepare(frame.image, frame.lens())
        t1 = synced_time(device)
        heads = self.heads.for_mode()
        entry = encoding.encode(frame, heads, prepared)
        group = [encoding.encode(c, heads) for c in companions]
        self.window.offer([*group, entry])
        spec = self.grid_budget.next_spec(cfg.grid, cfg.latency_budget, self._last_grid_timing)
        query = Query.of(*self.heads.choose(entry, group, self.window.posed(), spec), device)
        t2 = synced_time(device)

        centres = spec.centres_cam()
        field = self.stages.field
        density, unseen = np.zeros(spec.shape, np.float32), np.ones(spec.shape, bool)
        occupancy, points, pdens = None, np.zeros((0, 3), np.float32), np.zeros(0, np.float32)
        prgb, planner = np.zeros((0, 3), np.uint8), None
        if want_grid:
            density, unseen = (a.reshape(spec.shape) for a in field.grid(centres, query))
            occupancy = bev_occupancy(density, unseen, spec.resolution_z)
            points, pdens = occupied_voxels(centres, density, unseen, cfg.grid.occupied_density)
            prgb = point_colours(points, encoding.canonical.Kn, prepared.resized)
            planner = self.planner.grid(frame, field, query) if self.planner.enabled else None
        t3 = synced_time(device)

        depth = depth_lens = confidence = None
        if want_depth:
            depth, confidence, depth_K = field.depth(self.heads.depth_query(query), prepared.Kn)
            depth_lens = Lens.pinhole(depth_K, depth.shape[1], depth.shape[0])
            if cfg.render.depth_camera == "input":
                target = frame.lens()
                depth, confidence = depth_in(depth, depth_lens, target), depth_in(confidence, depth_lens, target, 0.0)
                depth_lens = target
        t4 = synced_time(device)
        for problem in compiled.problems():
            self.accounting.fault(
                "not_compiled",
                f"a compiled loop nest could not be built ({problem}); torch's operators run instead, slower",
            )

        if frame.T_fixed_cam is not None:
            out_frame, T_out_cam = cfg.fixed_frame, frame.T_fixed_cam
        else:
            out_frame, T_out_cam = frame.frame_id, np.eye(4)
        points = (points @ T_out_cam[:3, :3].T + T_out_cam[:3, 3]).astype(np.float32)
        # the grid budget adapts to this frame when the next one starts (GridBudget.next_spec)
        self._last_grid_timing = (time.perf_counter() - t0, t3 - t2) if want_grid else None
        return Outputs(
            frame.stamp_ns,
            frame.frame_id,
            out_frame,
            T_out_cam,
            spec,
            density,
            unseen,
            occupancy,
            planner,
            points,
            pdens.astype(np.float32),
            prgb,
            depth,
            depth_lens,
            confidence,
            query.head,
            query.num_views,
            {"resize": t1 - t0, "encode": t2 - t1, "grid": t3 - t2, "depth": t4 - t3},
        )

    def _resolve(self, cam: CameraInput, img: Image, timed_out: bool) -> tuple[Lens, np.ndarray]:
        """Lens and pose in the fixed frame of a camera's image; raises Wait or Dropped."""
        if cam.intrinsics is None:
            # camera_info travels on its own topic and may arrive just after the image
            if not timed_out:
                raise Wait
            self.rig.discard(cam, img, "no_camera_info", "no camera_info received")
        source = self.rig.tf_frame(cam, img)
        try:
            T = self.tf.lookup(self.cfg.fixed_frame, source, img.stamp_ns)
        except TfError as exc:
            if exc.reason in ("future", "unknown_frame", "disconnected") and not timed_out:
                raise Wait from exc  # the transform may still arrive: retry on the next step
            reason = {"future": "tf_late", "past": "tf_too_old"}.get(exc.reason, f"tf_{exc.reason}")
            hint = "; if the images' frame has another name there, set topics.camera_frame" if cam.index == 0 else ""
            lost = f" (image frame {source!r}{hint})" if exc.reason == "unknown_frame" else ""
            self.rig.discard(cam, img, reason, f"no pose in {self.cfg.fixed_frame}: {exc}{lost}")
        return cam.intrinsics.lens, T

    def _frame(self, cam: CameraInput, img: Image, lens: Lens, T: np.ndarray) -> Frame:
        """Decode an image into a Frame; format changes are counted, a size unlike camera_info drops it."""
        if img.rgb is None:
            t0 = time.perf_counter()
            try:
                img.rgb = sensor_data.decode_image(img.msg, cam.msgtype, self.cfg.topics.mono16_bits)
            except cdr.ConversionError as exc:
                self.rig.discard(cam, img, "bad_image", f"{cam.image_topic}: {exc}")
            img.decode_s = time.perf_counter() - t0
        rgb = img.rgb
        h, w = rgb.shape[:2]
        fmt = (sensor_data.image_format(img.msg, cam.msgtype), w, h)
        if cam.format is not None and fmt != cam.format:
            self.accounting.fault(
                "image_format_changed",
                f"{cam.image_topic}: {cam.format[0]} {cam.format[1]}x{cam.format[2]} became {fmt[0]} {w}x{h}",
            )
        cam.format = fmt
        if (w, h) != (lens.width, lens.height):
            self.rig.discard(
                cam,
                img,
                "size_mismatch",
                f"{cam.image_topic}: image {w}x{h} but camera_info {lens.width}x{lens.height}",
            )
        return Frame(rgb, lens.K, img.stamp_ns, self.rig.tf_frame(cam, img), T, lens)

    def published(self, publish_s: float, latency_s: float) -> None:
        """The node published the last frame: its publish time and publish-minus-stamp latency."""
        self.timings["publish"] = publish_s
        self.latencies.append(latency_s)

    # ------------------------------------------------------------ run-time parameters (self.params)
    def set_param(self, name: str, value: Any) -> None:
        """Accept a run-time parameter change after validating it; raises ValueError with the reason.

        Accepted changes take effect between frames (at the next :meth:`step`), so a frame
        being processed in another thread never sees half a change.
        """
        self.params.stage([(name, value)])

    def set_params(self, changes: list[tuple[str, Any]]) -> None:
        """Accept several run-time changes together or none of them (an atomic parameter set); raises ValueError."""
        self.params.stage(changes)

    def change_params(self, changes: list[tuple[str, Any]]) -> None:
        """Make run-time changes of the runner's own (between frames, at once) and keep them for
        :meth:`take_own_changes`.
        """
        self.params.change(changes)

    def take_own_changes(self) -> list[tuple[str, Any]]:
        """The parameter changes the runner made itself since the last call (the node sets its parameters to them)."""
        return self.params.take_own_changes()

    def apply_params(self) -> None:
        """Copy accepted parameter changes into the live config (whose parts the stages hold); between frames."""
        self.params.apply()
        self.mapping.configure()  # map.enabled switched: build or release the map

    # ------------------------------------------------------------ reporting
    def diagnostics(self, stamp_ns: int) -> bytes:
        """DiagnosticArray bytes: counts, latency against the budget, head, views and cameras."""
        return diagnostic_array(self, stamp_ns)
