"""The runner's state as a DiagnosticArray: counts, latency against the budget, head, views and cameras."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from kdbts_ros.core.frames import Outputs
from kdbts_ros.core.stages import Stages
from kdbts_ros.messages import cdr, published
from kdbts_ros.runtime.accounting import Accounting
from kdbts_ros.runtime.cameras import CameraInput
from kdbts_ros.runtime.config import RunnerConfig
from kdbts_ros.runtime.mapping import MapStage
from kdbts_ros.runtime.window import FrameWindow


class RunnerState(Protocol):
    """What the report reads (a :class:`kdbts_ros.runtime.runner.FrameRunner`)."""

    cfg: RunnerConfig
    node_name: str  # fully qualified: two nodes in two namespaces report apart
    stages: Stages
    window: FrameWindow
    tf_name: str
    accounting: Accounting
    processed: int
    latencies: deque[float]
    last: Outputs | None
    timings: dict[str, float]
    mapping: MapStage

    @property
    def cameras(self) -> Sequence[CameraInput]:  # read-only: a runner's list[CameraInput] satisfies it
        ...


def diagnostic_array(runner: RunnerState, stamp_ns: int) -> bytes:
    """DiagnosticArray bytes; counts that grew since the last report turn it to WARN."""
    lat = np.asarray(runner.latencies) if runner.latencies else np.zeros(1)
    counts, new = runner.accounting.report()
    level, message = "OK", "running"
    if runner.processed == 0:
        level, message = "WARN", "no frame processed yet"
    elif lat.max() > runner.cfg.latency_budget:
        level, message = "WARN", f"latency {lat.max():.3f} s above budget {runner.cfg.latency_budget} s"
    if new:
        level = "WARN"
        message += "; since the last report: " + ", ".join(f"{k} +{v}" for k, v in sorted(new.items()))
    last = runner.last
    values: dict[str, object] = {
        "frames_processed": runner.processed,
        "latency_last_s": f"{lat[-1]:.4f}",
        "latency_max_s": f"{lat.max():.4f}",
        "latency_median_s": f"{np.median(lat):.4f}",
        "dropped_total": sum(runner.accounting.drops.values()),
        "head": last.head if last else "",
        "num_views": last.num_views if last else 0,
        "window_frames": len(runner.window),
        "weights": runner.stages.model_info.get("weights", ""),
        "device": str(runner.stages.device),
        "encoder": runner.stages.encoding.encoder.describe(),
        "network_camera": network_camera(runner),
        "tf_buffer": runner.tf_name,
    }
    for c in runner.cameras:
        values[f"camera{c.index}_topic"] = c.image_topic
        values[f"camera{c.index}_images"] = c.received
        values[f"camera{c.index}_intrinsics"] = c.intrinsics.source if c.intrinsics else "missing"
        if c.intrinsics:  # how much of the network's view this camera fills (the rest is padding, unseen)
            coverage = runner.stages.encoding.resampling(c.intrinsics.lens)[0].coverage
            values[f"camera{c.index}_view_coverage"] = f"{coverage:.3f}"
        values[f"camera{c.index}_dropped"] = sum(c.dropped.values())
    values.update(runner.mapping.status())
    values.update(sorted(counts.items()))
    if last:
        values["grid_resolution_m"] = f"{last.spec.resolution:.3f}"  # may differ from grid.resolution: the budget
        values.update({f"time_{k}_s": f"{v:.4f}" for k, v in runner.timings.items()})
    return cdr.serialize(
        published.diagnostics(stamp_ns, f"{runner.node_name}: density field", runner.node_name, level, message, values)
    )


def network_camera(runner: RunnerState) -> str:
    """The canonical camera every frame is seen through: size and normalised intrinsics."""
    c = runner.stages.canonical
    return f"{c.width}x{c.height} fx' {c.fx:.4f} fy' {c.fy:.4f} cx' {c.cx:.4f} cy' {c.cy:.4f}"
