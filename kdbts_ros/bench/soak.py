"""``kdbts soak``: the live rclpy node fed faster than it keeps up, for thousands of frames.

A source node publishes TF, camera_info and images in wall-clock time at ``load_factor``
times the rate the node sustains (measured first in a closed loop), each frame stamped with
its scheduled time; a sink subscribes to every output, so all of them are computed. The node
keeps only the newest image of its output camera, so under overload the latency (output
received minus image stamp) must stay bounded and memory flat: both are reported per tenth
of the run, with every image sent accounted for.
"""

from __future__ import annotations

import copy
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdbts_ros.bench.latency import set_network
from kdbts_ros.bench.measure import machine, memory_mb, percentiles_ms
from kdbts_ros.core.report_paths import report_path
from kdbts_ros.data.rig import KITTI360_RIG, base_trajectory, kitti_like_intrinsics
from kdbts_ros.data.synthetic import SceneConfig, StreetScene
from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.ros.harness import SoakHarness
from kdbts_ros.runtime.config import RunnerConfig

DISTINCT_FRAMES = 8  # rendered once and looped: the node's work does not depend on the picture
CALIBRATION_FRAMES = 30  # closed-loop frames that measure the sustained rate ...
CALIBRATION_WARMUP = 5  # ... after these (first inferences are slower)
TENTHS = 10
SECOND_CAMERA = ("/right/image_raw/compressed", "/right/camera_info")
PERCENTILES = (50, 90, 99, 100)


def soak_config(base: RunnerConfig, network: str, cameras: int) -> RunnerConfig:
    """The node's configuration: the network (empty: the config's), and a second camera on a compressed topic."""
    cfg = copy.deepcopy(base)
    if network:
        set_network(cfg, network)
    t = cfg.topics
    t.images, t.camera_infos = t.images[:1], t.camera_infos[:1]
    if cameras == 2:
        t.images.append(SECOND_CAMERA[0])
        t.camera_infos.append(SECOND_CAMERA[1])
    return cfg


class _Deliveries:
    """Stamp of each published frame and when its outputs arrived, in arrays allocated up front (flat memory)."""

    def __init__(self, frames: int, outputs: int):
        self.outputs = outputs  # header-stamped output messages of one processed frame
        self.sent_ns = np.zeros(frames, np.int64)
        self.count = np.zeros(frames, np.int32)
        self.last_ns = np.zeros(frames, np.int64)
        self.n = 0

    def sent(self, stamp: int) -> None:
        self.sent_ns[self.n] = stamp
        self.n += 1

    def arrived(self, stamp: int, now_ns: int) -> None:
        i = int(np.searchsorted(self.sent_ns[: self.n], stamp))  # stamps increase
        if i < self.n and self.sent_ns[i] == stamp:
            self.count[i] += 1
            self.last_ns[i] = now_ns

    def delivered(self) -> np.ndarray:
        """Indices of the frames whose outputs have all arrived."""
        return np.flatnonzero(self.count[: self.n] >= self.outputs)

    def latency_s(self, i: int) -> float:
        """Arrival of a frame's last output minus its image stamp."""
        return (self.last_ns[i] - self.sent_ns[i]) * 1e-9


class _RigFrames:
    """A few rig frames of the procedural street, rendered once; serialized afresh with each new stamp."""

    def __init__(self, cfg: RunnerConfig, width: int, height: int):
        scene = StreetScene(SceneConfig(seed=0))
        K = kitti_like_intrinsics(width, height)
        self.fixed_frame = cfg.fixed_frame
        self.rig = KITTI360_RIG[: len(cfg.topics.images)]  # the stereo pair
        self.poses = base_trajectory(DISTINCT_FRAMES)
        self.infos = [sensor_data.camera_info(K, width, height, 0, cam.name) for cam in self.rig]
        self.images = []
        for T in self.poses:
            frame = []
            for cam, topic in zip(self.rig, cfg.topics.images):
                rgb = scene.render(T @ cam.T_base_cam(), K, width, height)[0]
                compressed = sensor_data.image_msgtype(topic) == cdr.COMPRESSED_IMAGE
                frame.append(
                    sensor_data.compressed_image(rgb, 0, cam.name)
                    if compressed
                    else sensor_data.rgb_image(rgb, 0, cam.name)
                )
            self.images.append(frame)

    def static_tf(self) -> bytes:
        """base_link -> each camera."""
        return cdr.serialize(
            sensor_data.tf_message([("base_link", cam.name, time.time_ns(), cam.T_base_cam()) for cam in self.rig])
        )

    def messages(self, i: int, stamp: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """/tf of the vehicle pose, then each camera's camera_info and image, all at ``stamp``."""
        k = i % DISTINCT_FRAMES
        tf = cdr.serialize(sensor_data.tf_message([(self.fixed_frame, "base_link", stamp, self.poses[k])]))
        per_camera = []
        for cam, info, image in zip(self.rig, self.infos, self.images[k]):
            info.header = image.header = cdr.header(stamp, cam.name)
            per_camera.append((cdr.serialize(info), cdr.serialize(image)))
        return tf, per_camera


@dataclass
class _Counts:
    """The node's counters at one moment, so that the calibration frames can be left out."""

    processed: int
    received: int
    dropped: Counter
    drops: Counter
    faults: Counter

    @classmethod
    def of(cls, runner) -> _Counts:
        cam = runner.cameras[0]
        return cls(runner.processed, cam.received, Counter(cam.dropped), Counter(runner.drops), Counter(runner.faults))


def _wait(condition, seconds: float, hold: float = 0.0) -> bool:
    """Poll until ``condition`` has held for ``hold`` seconds; False once ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    since = None
    while True:
        now = time.monotonic()
        if not condition():
            since = None
        elif since is None:
            since = now
        if since is not None and now - since >= hold:
            return True
        if now > deadline:
            return False
        time.sleep(0.002)


def _in_hand(runner, before: _Counts) -> int:
    """Output-camera images received since ``before`` that are being processed: neither done, dropped nor waiting."""
    cam = runner.cameras[0]
    return (
        cam.received
        - before.received
        - (runner.processed - before.processed)
        - len(cam.waiting)
        - (sum(cam.dropped.values()) - sum(before.dropped.values()))
    )


def calibrate(h: SoakHarness) -> dict[str, float]:
    """The node's sustained rate: each frame published as soon as the previous one's outputs all arrived."""
    d = h.deliveries = _Deliveries(CALIBRATION_FRAMES, len(h.outputs))
    for i in range(CALIBRATION_FRAMES):
        h.publish(i, time.time_ns())
        if not _wait(lambda i=i: d.count[i] >= d.outputs, h.cfg.tf_timeout + 30.0):
            raise RuntimeError(f"calibration frame {i} was not delivered; drops {dict(h.node.runner.drops)}")
    latency = [d.latency_s(i) for i in range(CALIBRATION_WARMUP, CALIBRATION_FRAMES)]
    return {"frames": len(latency), **percentiles_ms(latency), "sustained_hz": 1.0 / float(np.median(latency))}


def _memory_mb(field: str) -> float:
    """:func:`memory_mb`, which the soak's report cannot do without (it reads /proc: Linux)."""
    mb = memory_mb(field)
    if mb is None:
        raise RuntimeError(f"no {field} in /proc/self/status")
    return mb


def _tenth(i: int, frames: int) -> int:
    return i * TENTHS // frames


def soak(h: SoakHarness, frames: int, rate: float, progress) -> dict[str, object]:
    """Publish ``frames`` rig frames at ``rate`` Hz, let the node finish, and summarise.

    Frame i is stamped with its scheduled time, as a camera running at the rate would stamp
    it; a publish the process delays (the node shares its interpreter) comes late and in a
    burst, as delivery after a stall of a real node would, and counts as latency.
    """
    runner = h.node.runner
    before = _Counts.of(runner)
    d = h.deliveries = _Deliveries(frames, len(h.outputs))
    late = np.zeros(frames)
    rss: list[tuple[int, float]] = []  # (frame index, MiB)
    # about 1 s apart, but at least ten samples per tenth in a short run
    rss_every = min(1.0, frames / rate / (10 * TENTHS))
    start = time.time_ns() + 10_000_000
    next_rss = time.monotonic()
    for i in range(frames):
        stamp = start + round(i * 1e9 / rate)
        delay = (stamp - time.time_ns()) * 1e-9
        if delay > 0:
            time.sleep(delay)
        h.publish(i, stamp)
        late[i] = (time.time_ns() - stamp) * 1e-9
        now = time.monotonic()
        if now >= next_rss:
            rss.append((i, _memory_mb("VmRSS")))
            next_rss = now + rss_every
        if _tenth(i + 1, frames) > _tenth(i, frames):
            dropped = sum(runner.cameras[0].dropped.values()) - sum(before.dropped.values())
            progress(
                f"{_tenth(i + 1, frames)}/{TENTHS}: sent {i + 1}, processed {runner.processed - before.processed}"
                f", dropped {dropped}, RSS {rss[-1][1]:.0f} MiB"
            )
    duration = (time.time_ns() - start) * 1e-9
    # let the node finish the frame in hand and its outputs arrive (a frame may wait tf_timeout), and hold
    # a moment, so that an image still on its way is taken too
    _wait(
        lambda: (
            runner.pending is None
            and _in_hand(runner, before) == 0
            and len(d.delivered()) >= runner.processed - before.processed
        ),
        h.cfg.tf_timeout + 10.0,
        hold=0.2,
    )
    h.stop()
    _wait(lambda: _in_hand(runner, before) == 0, 10.0)  # a callback dispatched before the stop may still run
    return {
        "rate_hz": rate,
        "duration_s": duration,
        "publish_late": percentiles_ms(late, PERCENTILES),
        **summary(h, before, frames, duration, rss),
    }


def summary(
    h: SoakHarness, before: _Counts, frames: int, duration: float, rss: list[tuple[int, float]]
) -> dict[str, object]:
    """Latency percentiles overall and per tenth, the accounting of every image sent, and memory per tenth."""
    runner, d = h.node.runner, h.deliveries
    assert isinstance(d, _Deliveries)  # soak() set it
    after = _Counts.of(runner)
    delivered = d.delivered()
    latency = [d.latency_s(i) for i in delivered]
    tenths = []
    for k in range(TENTHS):
        lat = [d.latency_s(i) for i in delivered if _tenth(i, frames) == k]
        mem = [mb for i, mb in rss if _tenth(i, frames) == k]
        tenths.append(
            {
                "frames_delivered": len(lat),
                **(percentiles_ms(lat, PERCENTILES) if lat else {}),
                "rss_median_mb": float(np.median(mem)) if mem else None,
            }
        )
    processed = after.processed - before.processed
    received = after.received - before.received
    dropped = dict(after.dropped - before.dropped)
    waiting = len(runner.cameras[0].waiting)
    rss_tenth = [t["rss_median_mb"] for t in tenths]
    p90 = [t.get("p90_ms") for t in tenths]
    return {
        "processed_hz": processed / duration,
        "latency": {**(percentiles_ms(latency, PERCENTILES) if latency else {}), "tenths": tenths},
        # a backlog grows with the frame index: last / second tenth would be about 4.5 or more
        "latency_drift": p90[-1] / p90[1] if p90[1] and p90[-1] else None,
        "output_camera": {
            "sent": frames,
            "received": received,
            "not_received": frames - received,
            "processed": processed,
            "dropped": dropped,
            "waiting": waiting,
            "delivered": len(delivered),
            # every image the node received was processed, dropped for a counted reason, or still waits
            "accounted": received == processed + sum(dropped.values()) + waiting,
        },
        "drops": dict(after.drops - before.drops),
        "faults": dict(after.faults - before.faults),
        # VmHWM is only brought up to date at some kernel events: the highest sample may be above it
        "memory": {
            "peak_mb": max([_memory_mb("VmHWM")] + [mb for _, mb in rss]),
            "first_tenth_mb": rss_tenth[0],
            "second_tenth_mb": rss_tenth[1],
            "last_tenth_mb": rss_tenth[-1],
            # the first tenth includes warm-up (allocator pools, caches): the second is the baseline
            "growth_mb": rss_tenth[-1] - rss_tenth[1]
            if rss_tenth[1] is not None and rss_tenth[-1] is not None
            else None,
            "samples": len(rss),
        },
    }


def run(
    cfg: RunnerConfig,
    frames: int,
    rate: float,
    load_factor: float,
    image_size: tuple[int, int],
    progress=print,
    domain_id: int | None = None,
) -> dict[str, object]:
    """Soak the node: calibrate unless ``rate`` is given, then ``frames`` frames at the rate; the JSON-ready report."""
    width, height = image_size
    load_before = os.getloadavg()  # the figures depend on what else the machine runs
    h = SoakHarness(cfg, _RigFrames(cfg, width, height), 1 + os.getpid() % 100 if domain_id is None else domain_id)
    try:
        calibration = None
        if rate <= 0:
            calibration = calibrate(h)
            rate = load_factor * calibration["sustained_hz"]
            progress(
                f"sustained {calibration['sustained_hz']:.2f} frames/s in a closed loop; publishing at {rate:.2f} Hz"
            )
        stages = h.node.runner.stages
        report = {
            "machine": machine(),
            "input": f"{frames} rig frames of {len(cfg.topics.images)} camera(s) {width}x{height} "
            f"({', '.join(h.node.cfg.topics.images)}), {DISTINCT_FRAMES} distinct frames looped",  # as resolved
            "network": report_path(stages.model_info.get("weights", cfg.model.checkpoint)),
            "device": str(stages.device),
            "mode": cfg.mode,
            "calibration": calibration,
            "load_factor": load_factor if calibration else None,
            **soak(h, frames, rate, progress),
            "world_map": h.node.runner.mapping.status() or None,  # None: map.enabled off
            "load_average": {"before": load_before, "after": os.getloadavg()},
        }
    finally:
        h.close()
    return report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(report: dict[str, Any]) -> str:
    """Summary, latency and memory per tenth, and the accounting of the output camera's images."""
    cam, mem, cal = report["output_camera"], report["memory"], report["calibration"]
    load = report["load_average"]
    lines = [
        f"Machine: {report['machine']}; load average (1, 5, 15 min) before "
        f"{', '.join(f'{x:.2f}' for x in load['before'])}, after {', '.join(f'{x:.2f}' for x in load['after'])}",
        "",
        f"Input: {report['input']}; network {report['network']} on {report['device']}, head mode {report['mode']}",
        "",
    ]
    if cal:
        lines.append(
            f"Sustained rate (closed loop): {cal['sustained_hz']:.2f} frames/s; published at "
            f"{report['load_factor']:g} x that = {report['rate_hz']:.2f} Hz"
        )
    else:
        lines.append(f"Published at {report['rate_hz']:.2f} Hz (given)")
    late = report["publish_late"]
    lines += [
        f"Over {report['duration_s']:.0f} s the node processed {report['processed_hz']:.2f} frames/s; publishes "
        f"came after their scheduled stamp by median {late['median_ms']:.1f} ms, p99 {late['p99_ms']:.1f} ms, "
        f"max {late['max_ms']:.1f} ms",
        "",
        "| part of the run | frames delivered | latency median ms | p90 | p99 | max | RSS median MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lat = report["latency"]
    lines.append(
        f"| all | {cam['delivered']} | {_ms(lat.get('median_ms'))} | {_ms(lat.get('p90_ms'))} | "
        f"{_ms(lat.get('p99_ms'))} | {_ms(lat.get('max_ms'))} | - |"
    )
    for k, t in enumerate(lat["tenths"]):
        lines.append(
            f"| tenth {k + 1} | {t['frames_delivered']} | {_ms(t.get('median_ms'))} | {_ms(t.get('p90_ms'))}"
            f" | {_ms(t.get('p99_ms'))} | {_ms(t.get('max_ms'))} | {_ms(t['rss_median_mb'])} |"
        )
    drift = report["latency_drift"]
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(cam["dropped"].items())) or "none"
    lines += [
        "",
        f"Latency drift (p90 last tenth / second tenth): {'-' if drift is None else f'{drift:.2f}'}",
        "",
        f"Memory: peak {_ms(mem['peak_mb'])} MiB; RSS median first / second / last tenth "
        f"{_ms(mem['first_tenth_mb'])} / {_ms(mem['second_tenth_mb'])} / {_ms(mem['last_tenth_mb'])} MiB; "
        f"growth (last - second tenth) {_ms(mem['growth_mb'])} MiB",
        "",
        "| output camera images | count |",
        "|---|---:|",
        f"| sent | {cam['sent']} |",
        f"| received by the node | {cam['received']} |",
        f"| processed | {cam['processed']} |",
        f"| dropped ({dropped}) | {sum(cam['dropped'].values())} |",
        f"| still waiting | {cam['waiting']} |",
        f"| received = processed + dropped + waiting | {'yes' if cam['accounted'] else 'NO'} |",
        "",
        "All drops (every camera): " + (", ".join(f"{k} {v}" for k, v in sorted(report["drops"].items())) or "none"),
        "Faults worked around: " + (", ".join(f"{k} {v}" for k, v in sorted(report["faults"].items())) or "none"),
    ]
    return "\n".join(lines) + "\n"
