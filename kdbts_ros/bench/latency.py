"""``kdbts bench``: per-stage latency, throughput and peak memory of the node's per-frame path.

Frames of a procedural street at KITTI size (1242x375) are serialized as a
camera driver and a localiser publish them and go through the node's runner,
or with ``publish`` through the rclpy node itself with a subscriber on every
output, so no output is skipped; each case runs in a fresh process, so its
peak memory is its own. Stage times are taken after the device has
finished its work. Beside them, the arithmetic of each network stage (FLOPs of
the matmuls and convolutions, from torch's flop counter) over the measured
peak of a large matmul says how far each stage is from its arithmetic limit.
With a checkout of the official code, its own forward pass runs on the same frames
and grid with the same weights, beside the cases (official_forward.py).
"""

from __future__ import annotations

import copy
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from kdbts_ros.bench.measure import machine, memory_mb, percentiles_ms
from kdbts_ros.core.field import Query, choose_field
from kdbts_ros.core.grids import GridSpec
from kdbts_ros.core.lens import Lens
from kdbts_ros.core.loading import pick_device
from kdbts_ros.core.model import folded
from kdbts_ros.core.report_paths import report_path
from kdbts_ros.data.sequences import input_messages, synthetic_sample
from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.ros.harness import NodePublisher
from kdbts_ros.ros.tf_store import frame_runner
from kdbts_ros.runtime.config import RunnerConfig
from kdbts_ros.runtime.runner import FrameRunner

STAGES = ("decode", "resize", "encode", "grid", "depth", "messages", "map", "publish")  # map: with map.enabled
NETWORK_STAGES = ("encode", "grid", "depth")
KITTI_SIZE = (1242, 375)
OFFICIAL = "official"  # the path of the official implementation's forward pass


@dataclass(frozen=True)
class Case:
    """One benchmarked configuration."""

    network: str  # "resnet50": the official network at 192x640 (seeded random weights); "embedded"; or a checkpoint
    device: str
    path: str  # "fast" or "reference" (model.fast), or OFFICIAL: the official code's forward pass (fp32)
    window: int  # 1: the SV head; 2 or more: the MV head over that many frames
    dtype: str = "float32"
    backend: str = "torch"  # model.backend: torch or onnxruntime (the encoder)
    depth: str = "reference"  # "reference": every sample of every ray; "fine": render.fine

    @property
    def mode(self) -> str:
        return "sv" if self.window == 1 else "mv"

    @property
    def label(self) -> str:
        extra = "".join(
            f" {x}"
            for x in (self.backend if self.backend != "torch" else "", "fine-depth" if self.depth == "fine" else "")
            if x
        )
        return f"{self.device} {self.network} {self.path} {self.mode.upper()}({self.window}) {self.dtype}{extra}"

    def problem(self) -> str | None:
        """Why this combination cannot run (it is left out), or None."""
        if self.backend == "onnxruntime" and (
            self.path != "fast" or self.dtype != "float32" or not self.device.startswith("cpu")
        ):
            return "onnxruntime runs the fast path in float32 on the CPU"
        if self.depth == "fine" and self.path != "fast":
            return "the fine depth render refines the fast path's samples"
        return None


def set_network(cfg: RunnerConfig, network: str) -> None:
    """Point cfg at a network: "resnet50" (official size, seeded random weights), "embedded", or a checkpoint."""
    m = cfg.model
    if network == "resnet50":
        m.checkpoint, m.backbone, m.image_height, m.image_width = "random", "resnet50", 192, 640
    else:
        m.checkpoint, m.image_height, m.image_width = ("" if network == "embedded" else network), 0, 0


def case_config(base: RunnerConfig, case: Case, depth_scale: float | None) -> RunnerConfig:
    """The pipeline configuration of a case: network, device, path, head, window and depth size."""
    cfg = copy.deepcopy(base)
    set_network(cfg, case.network)
    m = cfg.model
    m.device, m.dtype, m.fast = case.device, case.dtype, case.path == "fast"
    m.backend, cfg.render.fine = case.backend, case.depth == "fine"
    if case.backend != "torch":
        m.compile = False  # torch.compile applies to the torch encoder only
    cfg.mode, cfg.window_size = case.mode, case.window
    if depth_scale:  # otherwise the node's own depth size (render.depth_scale)
        cfg.render.depth_scale = depth_scale
    return cfg


def official_cases(cases: list[Case]) -> list[Case]:
    """An official forward-pass case per device and window of the resnet50 cases, in their order."""
    keys = dict.fromkeys((c.device, c.window) for c in cases if c.network == "resnet50")
    return [Case("resnet50", device, OFFICIAL, window) for device, window in keys]


def compared(official: Case, network: str, path: str, device: str, window: int) -> bool:
    """Whether a case of ours (its network, path, device and window) is compared with ``official``."""
    return network == "resnet50" and path != OFFICIAL and (device, window) == (official.device, official.window)


def with_official(cases: list[Case]) -> list[Case]:
    """``cases`` with each official case run right after the last of ours it is compared with (same device and
    window): the pair is timed minutes apart at most, so this machine's drift over a run lands less on their ratio.
    """
    out = list(cases)
    for official in official_cases(cases):
        ours = [i for i, c in enumerate(out) if compared(official, c.network, c.path, c.device, c.window)]
        out.insert(ours[-1] + 1, official)
    return out


def peak_gflops(device: torch.device, dtype: str) -> float:
    """Measured GFLOP/s of a large square matmul in the compute dtype: the arithmetic ceiling."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    b = torch.randn_like(a)
    best = float("inf")
    for _ in range(4):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def stage_gflops(runner: FrameRunner, rgb: np.ndarray, lens: Lens) -> dict[str, float]:
    """GFLOPs of encode (with the folded maps, counted with torch's encoder), grid and depth for the newest
    window frame."""
    counts = {}
    stages = runner.stages
    with stages.precision():
        image01 = stages.encoding.prepare(rgb, lens).image01
        with FlopCounterMode(display=False) as fc:
            features = stages.model.encode(image01)[0]
            if runner.cfg.model.fast:
                for head in runner.heads.for_mode():
                    folded.fold_features(stages.model, features, head)
        counts["encode"] = fc.get_total_flops()
        current, next_spec = runner.window.entries[-1], runner.grid_budget.spec(runner.cfg.grid)
        query = Query.of(*runner.heads.choose(current, (), runner.window.posed(), next_spec), stages.device)
        centres = GridSpec.from_config(runner.cfg.grid).centres_cam()  # the configured grid, whatever the budget
        # on a field with nothing kept: the live one keeps the cells' code terms from frame to frame, which
        # would leave them out (the SV head's one-output layer runs in a compiled loop nest the counter cannot
        # see into: 2-3 % of the count, left out)
        fresh = choose_field(runner.cfg, stages.model, stages.device, stages.input_size)
        with FlopCounterMode(display=False) as fc:
            fresh.grid(centres, query)
        counts["grid"] = fc.get_total_flops()
        # the fused ray march (render.fused) is one compiled kernel the counter cannot see into; torch's
        # operators do the same multiply-adds, so the count is theirs
        render, fused = runner.cfg.render, runner.cfg.render.fused
        render.fused = False
        try:
            with FlopCounterMode(display=False) as fc:
                stages.field.depth(runner.heads.depth_query(query), current.Kn)  # the head render.depth_head picks
        finally:
            render.fused = fused
        counts["depth"] = fc.get_total_flops()
    return {k: v / 1e9 for k, v in counts.items()}


class _Direct:
    """The node's runner without ROS: everything but the publish stage."""

    def __init__(self, cfg: RunnerConfig):
        self.runner = frame_runner(cfg)

    def step(self, now_ns: int) -> None:
        self.runner.step(now_ns)

    def close(self) -> None:
        pass


def run_case(
    cfg: RunnerConfig, stream: list[tuple[int, str, str, bytes]], warmup: int, publish: bool
) -> dict[str, Any]:
    """Feed the stream through the node (or its runner) and summarise stage times and peaks."""
    device = pick_device(cfg.model.device)
    driver = NodePublisher(cfg) if publish else _Direct(cfg)
    runner = driver.runner
    image_topic = runner.cfg.topics.images[0]  # fully qualified, as the stream's
    samples: list[dict[str, float]] = []
    e2e: list[float] = []
    try:
        for stamp, topic, _msgtype, data in stream:
            t0 = time.perf_counter()
            runner.handle(topic, data, stamp)
            if topic != image_topic:
                continue
            before = runner.processed
            driver.step(stamp)
            if runner.processed > before and before >= warmup:
                e2e.append(time.perf_counter() - t0)
                samples.append(dict(runner.timings))
        if not samples:
            raise RuntimeError(f"no frame was measured (frames after warm-up: 0; drops: {dict(runner.drops)})")
        last_image = next(d for _, t, _, d in reversed(stream) if t == image_topic)
        assert runner.cameras[0].intrinsics is not None and runner.last is not None  # a frame was measured
        lens = runner.cameras[0].intrinsics.lens
        rgb = sensor_data.image_to_rgb(cdr.deserialize(last_image, "sensor_msgs/msg/Image"))
        result: dict[str, object] = {
            "stages": {s: percentiles_ms([x[s] for x in samples]) for s in STAGES if s in samples[0]},
            "end_to_end": percentiles_ms(e2e),
            "fps": float(1.0 / np.mean(e2e)),
            "frames": len(samples),
            "head": runner.last.head,
            "views": runner.last.num_views,
            "dropped": dict(runner.drops),
            "peak_rss_mb": memory_mb(),
            "peak_cuda_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            "gflops": stage_gflops(runner, rgb, lens),
            # onnxruntime: the export's key, folder, and seconds (0 when the cached export was reused)
            "backend_info": {k: report_path(v) if k == "dir" else v for k, v in runner.stages.backend_info.items()},
            "encoder": runner.stages.encoding.encoder.describe(),
        }
    finally:
        driver.close()
    return result


def markdown(report: dict[str, Any]) -> str:
    """The latency table and the arithmetic table of a report."""
    lines = [
        f"Machine: {report['machine']}",
        "",
        "| case | " + " | ".join(STAGES) + " | end-to-end median / p99 ms | frames/s | peak RSS / CUDA MiB |",
        "|---|" + "---:|" * (len(STAGES) + 3),
    ]
    for r in report["cases"]:
        st = r["stages"]
        cells = [f"{st[s]['median_ms']:.1f}" if s in st else "-" for s in STAGES]
        cuda = f" / {r['peak_cuda_mb']:.0f}" if r["peak_cuda_mb"] is not None else ""
        rss = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] is not None else "-"
        lines.append(
            f"| {r['label']} | "
            + " | ".join(cells)
            + f" | {r['end_to_end']['median_ms']:.1f} / {r['end_to_end']['p99_ms']:.1f} | {r['fps']:.2f} | "
            f"{rss}{cuda} |"
        )
    lines += [
        "",
        "Stage medians against the arithmetic limit (GFLOP of matmuls and convolutions over the "
        "measured peak GFLOP/s of a large matmul in the compute dtype):",
        "",
        "| case | stage | GFLOP | limit ms | measured ms | measured / limit |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in report["cases"]:
        for s in NETWORK_STAGES:
            if s not in r["stages"]:  # the official rows time encode and grid only
                continue
            limit = r["gflops"][s] / r["peak_gflops"] * 1e3
            measured = r["stages"][s]["median_ms"]
            ratio = f"{measured / limit:.1f}" if limit > 0 else "-"
            lines.append(f"| {r['label']} | {s} | {r['gflops'][s]:.2f} | {limit:.2f} | {measured:.1f} | {ratio} |")
    exported = [r for r in report["cases"] if r.get("backend_info", {}).get("backend", "torch") != "torch"]
    if exported:
        lines += [
            "",
            "onnxruntime rows: encoder (with the folded maps) in onnxruntime, grid query and depth "
            "rendering in torch; the export before the first frame (not in the frame times):",
            "",
            "| case | export s | cached | folder |",
            "|---|---:|---|---|",
        ]
        for r in exported:
            b = r["backend_info"]
            lines.append(f"| {r['label']} | {b['export_s']:.1f} | {'yes' if b['cached'] else 'no'} | {b['dir']} |")
    official = [r for r in report["cases"] if r["path"] == OFFICIAL]
    if official:
        lines += [
            "",
            "Official rows: the official implementation's `encode` (of every window frame) and "
            "`forward(only_density=True)` at the grid cell centres, same frames and weights, fp32; "
            "end-to-end is their sum. Its densities against our reference path's at the same points:",
            "",
            "| case | torchvision | points x frames | max abs difference | largest density | relative |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in official:
            a = r["agreement"]
            lines.append(
                f"| {r['label']} | {r['official']['torchvision']} | {a['points']} x {a['frames']} | "
                f"{a['max_abs_diff']:.2g} | {a['max_density']:.3g} | {a['max_rel_diff']:.1e} |"
            )
        lines += [
            "",
            "Against the official pass (end-to-end medians; above 1: ours takes less time, with every output):",
            "",
            "| ours | official | ours ms | official ms | official / ours |",
            "|---|---|---:|---:|---:|",
        ]
        for r in official:
            case = Case(r["network"], r["device"], OFFICIAL, r["window"])
            for ours in report["cases"]:
                if compared(case, ours["network"], ours["path"], ours["device"], ours["window"]):
                    a_ms, b_ms = ours["end_to_end"]["median_ms"], r["end_to_end"]["median_ms"]
                    lines.append(f"| {ours['label']} | {r['label']} | {a_ms:.1f} | {b_ms:.1f} | {b_ms / a_ms:.2f}x |")
    return "\n".join(lines) + "\n"


def run(
    base: RunnerConfig,
    cases: list[Case],
    frames: int,
    warmup: int | None,
    depth_scale: float | None,
    publish: bool,
    official: Path | None = None,
    progress=print,
) -> dict[str, object]:
    """Benchmark every case on one input stream, with ``official`` (a checkout) official_cases too; the report."""
    if official is not None:
        from kdbts_ros.bench.official_forward import load_official, run_official

        load_official(official)  # a checkout that cannot be imported fails here, before any case runs
        cases = with_official(cases)
    seq = synthetic_sample(frames, *KITTI_SIZE)
    stream = input_messages(seq, base.fixed_frame, base.topics)
    peaks: dict[tuple[str, str], float] = {}
    results = []
    for case in cases:
        cfg = case_config(base, case, depth_scale)
        device = pick_device(cfg.model.device)
        key = (str(device), case.dtype)
        if key not in peaks:
            peaks[key] = peak_gflops(device, case.dtype)
        # a fresh process per case: peak memory is the case's own, and no allocator cache carries over
        warm = case.window if warmup is None else warmup
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            if case.path == OFFICIAL:
                res = pool.apply(run_official, (official, cfg, seq, warm))
            else:
                res = pool.apply(run_case, (cfg, stream, warm, publish))
        res.update(asdict(case), label=case.label, depth_scale=cfg.render.depth_scale, peak_gflops=peaks[key])
        agreement = (
            f", densities within {res['agreement']['max_abs_diff']:.2g} of the reference path"
            if case.path == OFFICIAL
            else ""
        )
        progress(
            f"{case.label}: {res['fps']:.2f} frames/s, end-to-end median {res['end_to_end']['median_ms']:.1f} ms"
            f"{agreement}"
        )
        results.append(res)
    return {
        "machine": machine(),
        "input": f"{frames} frames {KITTI_SIZE[0]}x{KITTI_SIZE[1]} rgb8",
        "publish": publish,
        "cases": results,
    }
