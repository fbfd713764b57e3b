"""The vehicle-GPU benchmark in one prepared run: ``python -m kdbts_ros.bench.gpu_script``.

On a machine with a CUDA device it runs, one after the other, each step's output under
``docs/performance/<tag>_*`` (tag: the GPU's name):

1. ``kdbts bench`` in fp16 autocast with the compiled encoder (CUDA graphs), ResNet-50 at 640x192
   and the embedded network, SV and MV(4), full-size depth, without ROS publishing (the network's
   per-frame path);
2. the same in fp32 with torch's encoder, the baseline the fp16 rows are read against;
3. where ``trtexec`` (TensorRT) is on PATH: ``kdbts export`` of the embedded network and fp16
   engines of its encoder and SV query, with trtexec's timing logs;
4. ``<tag>_targets.md``: step 1's frames/s and p99 against the GPU targets.

``--plan`` prints the steps and starts nothing (what runs without a GPU, and what the tests check).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# issue 27's targets for the vehicle GPU: frames/s per head and window, and the end-to-end p99
TARGET_FPS = {"SV(1)": 400.0, "MV(4)": 200.0}
TARGET_P99_MS = 5.0
FRAMES, WARMUP = 208, 8  # 200 timed frames; the compiled encoder and the fused march build in the warm-up


@dataclass(frozen=True)
class Step:
    """One command of the run, what it writes, and why."""

    why: str
    argv: list[str]
    writes: Path


def device_tag(name: str) -> str:
    """A file-name tag of a CUDA device name, e.g. 'NVIDIA H100 80GB HBM3' -> 'gpu_nvidia_h100_80gb_hbm3'."""
    return "gpu_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def bench_step(kdbts: str, out: Path, dtype: str, compiled: bool) -> Step:
    argv = [kdbts, "bench", "--device", "cuda", "--networks", "resnet50,embedded", "--windows", "1,4"]
    argv += ["--paths", "fast", "--dtype", dtype, "--depth-scale", "1", "--frames", str(FRAMES)]
    argv += ["--warmup", str(WARMUP), "--no-publish", "--out", str(out)]
    argv.append("--compile" if compiled else "--no-compile")
    return Step(f"kdbts bench, {dtype}{', compiled encoder' if compiled else ''}", argv, out)


def plan(tag: str, docs: Path, kdbts: str = "kdbts", trtexec: str | None = None) -> list[Step]:
    """The steps of a run on the GPU named by ``tag``, writing under ``docs``; TensorRT with ``trtexec``."""
    steps = [
        bench_step(kdbts, docs / f"{tag}_fp16_compiled", "float16", True),
        bench_step(kdbts, docs / f"{tag}_fp32", "float32", False),
    ]
    if trtexec is not None:
        export = docs / f"{tag}_tensorrt"
        steps.append(Step("ONNX export of the embedded network", [kdbts, "export", "--out", str(export)], export))
        for graph, shapes in (("encoder", []), ("query_sv", ["--optShapes=points:65536x3"])):
            engine = export / f"{graph}_fp16.engine"
            argv = [trtexec, f"--onnx={export / f'{graph}.onnx'}", "--fp16", f"--saveEngine={engine}", *shapes]
            argv += ["--percentile=50,99", f"--exportTimes={export / f'{graph}_times.json'}"]
            if shapes:  # the query's point count is dynamic: a range around the optimum
                argv += ["--minShapes=points:1x3", "--maxShapes=points:262144x3"]
            steps.append(Step(f"TensorRT fp16 engine of {graph}", argv, engine))
    return steps


def targets_table(report: dict[str, Any]) -> str:
    """Markdown: each case's frames/s and end-to-end p99 against the GPU targets, met or by how much not."""
    lines = [
        f"Machine: {report['machine']}",
        "",
        f"GPU targets: SV >= {TARGET_FPS['SV(1)']:.0f} frames/s, MV(4) >= {TARGET_FPS['MV(4)']:.0f} frames/s, "
        f"end-to-end p99 <= {TARGET_P99_MS:.0f} ms.",
        "",
        "| case | frames/s | target | p99 ms | frames/s met | p99 met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for case in report["cases"]:
        key = next((k for k in TARGET_FPS if k in case["label"]), None)
        if key is None:  # windows the targets do not name (the official rows have no fps target either)
            continue
        fps, p99, target = case["fps"], case["end_to_end"]["p99_ms"], TARGET_FPS[key]
        fps_met = "yes" if fps >= target else f"no ({fps / target:.2f}x)"
        p99_met = "yes" if p99 <= TARGET_P99_MS else f"no (+{p99 - TARGET_P99_MS:.1f} ms)"
        lines.append(f"| {case['label']} | {fps:.1f} | {target:.0f} | {p99:.2f} | {fps_met} | {p99_met} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kdbts_ros.bench.gpu_script", description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", action="store_true", help="print the steps and run nothing")
    p.add_argument("--docs", type=Path, default=Path("docs/performance"), help="where the tables go")
    p.add_argument("--tag", help="file-name tag (default: from the CUDA device's name)")
    args = p.parse_args(argv)
    import torch  # after argument parsing: --help stays instant

    if args.tag is None and not torch.cuda.is_available():
        if not args.plan:
            print(
                "gpu_script: no CUDA device here: run it on the vehicle's GPU (--plan shows the steps)", file=sys.stderr
            )
            return 2
        args.tag = "gpu_<name>"
    tag = args.tag or device_tag(torch.cuda.get_device_name())
    beside = Path(sys.executable).with_name("kdbts")  # the environment's own command, on PATH or not
    kdbts = str(beside) if beside.exists() else shutil.which("kdbts") or "kdbts"
    steps = plan(tag, args.docs, kdbts, shutil.which("trtexec"))
    targets = args.docs / f"{tag}_targets.md"
    if args.plan:
        for i, s in enumerate(steps, 1):
            print(f"{i}. {s.why} -> {s.writes}\n   {' '.join(s.argv)}")
        print(f"{len(steps) + 1}. the targets table -> {targets}")
        return 0
    for s in steps:
        print(f"gpu_script: {s.why}", flush=True)
        s.writes.parent.mkdir(parents=True, exist_ok=True)
        log = s.writes.parent / f"{s.writes.name}.log"
        with log.open("w") as f:
            done = subprocess.run(s.argv, stdout=f, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            print(f"gpu_script: step failed (exit {done.returncode}), its output in {log}", file=sys.stderr)
            return 1
    report = json.loads((steps[0].writes / "bench.json").read_text())
    targets.write_text(targets_table(report))
    print(f"gpu_script: tables in {args.docs} ({targets.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
