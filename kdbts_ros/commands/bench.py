"""``kdbts bench``: per-stage latency, frames/s and peak memory of the node's per-frame path; JSON and Markdown."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdbts_ros.commands.common import add_config_args, config, csv, write_report

HELP = (
    "per-stage latency, frames/s and peak memory of the node's per-frame path (not a test: run it on a quiet machine)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--device", default="", help="comma-separated torch devices (default: cpu, and cuda when available)")
    p.add_argument(
        "--networks",
        default="resnet50,embedded",
        help="comma-separated: resnet50 (official network at 192x640, seeded random weights), embedded "
        "(the shipped KDBTS network), or checkpoint paths (default: resnet50,embedded)",
    )
    p.add_argument(
        "--windows",
        default="1,2,4,8",
        help="comma-separated window sizes; 1 runs the SV head, more the MV head (default: 1,2,4,8)",
    )
    p.add_argument("--paths", default="fast", help="comma-separated: fast, reference (model.fast) (default: fast)")
    p.add_argument(
        "--backends",
        default="torch",
        help="comma-separated model.backend values: torch, onnxruntime (the encoder in "
        "onnxruntime on the CPU, fast path, float32; other combinations are left out) (default: torch)",
    )
    p.add_argument(
        "--depth",
        default="reference",
        help="comma-separated depth renders: reference (every sample), fine (render.fine, fast path "
        "only) (default: reference)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "float16", "bfloat16"),
        help="compute dtype (default: float32)",
    )
    p.add_argument("--frames", type=int, default=20, help="frames of the input stream (default: 20)")
    p.add_argument("--warmup", type=int, help="frames processed before timing starts (default: the window size)")
    p.add_argument(
        "--depth-scale",
        type=float,
        help="depth image size relative to the network input (default: the config's render.depth_scale, 1: the node's)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--compile: torch.compile every case's encoder whatever its size (model.compile_min_gflop 0; CUDA "
        "graphs on CUDA); --no-compile: torch's encoder (model.compile false); default: the config's, which "
        "compiles encoders from 20 GFLOP a frame. The build is in the first frame, a warm-up frame",
    )
    p.add_argument(
        "--publish",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="go through the rclpy node and publish to subscribers (default: when rclpy and the "
        "kdbts_ros messages are importable)",
    )
    p.add_argument(
        "--map",
        action="store_true",
        help="set map.enabled: fuse every frame into the world map and "
        "time it as the map stage (default: the config's map.enabled)",
    )
    p.add_argument(
        "--official",
        type=Path,
        metavar="PATH",
        help="a checkout of the official code (github.com/keonhee-han/KDBTS): per device and window of "
        "the resnet50 cases, also time its own forward pass (its encode of every window frame and its "
        "density query of the grid cell centres, fp32) on the same frames with the same weights, and "
        "report the largest difference of its densities from our reference path's (default: off)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("bench_out"), help="folder for bench.json and bench.md (default: bench_out)"
    )


def run(args: argparse.Namespace) -> int:
    """Time every case (device x network x backend x path x depth x window); devices and publishing default to
    what is here."""
    import torch

    from kdbts_ros.bench import latency
    from kdbts_ros.bench.official_forward import OfficialCodeError
    from kdbts_ros.ros.harness import can_publish

    if args.official is not None and "resnet50" not in csv(args.networks):
        print("kdbts bench: --official runs beside the resnet50 network; add resnet50 to --networks", file=sys.stderr)
        return 2
    devices = csv(args.device) or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        print("kdbts bench: CUDA was asked for but torch sees no GPU", file=sys.stderr)
        return 2
    publish = args.publish
    if publish is None:
        publish = can_publish()
    unknown = [b for b in csv(args.backends) if b not in ("torch", "onnxruntime")] + [
        d for d in csv(args.depth) if d not in ("reference", "fine")
    ]
    if unknown:
        print(f"kdbts bench: unknown --backends / --depth value(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    cases = []
    for case in (
        latency.Case(net, dev, path, int(w), args.dtype, backend, depth)
        for dev in devices
        for net in csv(args.networks)
        for backend in csv(args.backends)
        for path in csv(args.paths)
        for depth in csv(args.depth)
        for w in csv(args.windows)
    ):
        problem = case.problem()
        if problem:
            print(f"kdbts bench: left out {case.label}: {problem}", file=sys.stderr)
        else:
            cases.append(case)
    if not cases:
        print("kdbts bench: no case left to run", file=sys.stderr)
        return 2
    warm = max(c.window if args.warmup is None else args.warmup for c in cases)
    if args.frames <= warm:
        print(
            f"kdbts bench: --frames {args.frames} leaves no frame to time after the warm-up of {warm} "
            f"({'--warmup' if args.warmup is not None else 'the largest window'}); give --frames {warm + 1} or more",
            file=sys.stderr,
        )
        return 2
    base = config(args)
    if args.compile is not None:
        base.model.compile = args.compile
        if args.compile:
            base.model.compile_min_gflop = 0.0
    base.map.enabled = base.map.enabled or args.map
    try:
        report = latency.run(base, cases, args.frames, args.warmup, args.depth_scale, publish, args.official)
    except OfficialCodeError as exc:
        print(f"kdbts bench: --official: {exc}", file=sys.stderr)
        return 2
    write_report(args.out, "bench", report, latency.markdown(report))
    return 0
