"""``kdbts demo``: a short posed camera sequence through the node's own runner (:mod:`kdbts_ros.runtime.demo`).

The sequence is the real KITTI raw sample (drive 2011_09_26_0052, left colour
camera, ORB-SLAM poses) when its folder is present, else a procedural street.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kdbts_ros.commands.common import add_config_args, config, print_counts
from kdbts_ros.core.settings import ConfigError
from kdbts_ros.data.records import DatasetError
from kdbts_ros.data.sequences import kitti_sample, synthetic_sample
from kdbts_ros.runtime.demo import run_demo

HELP = "run the node's pipeline on a short posed sequence (no ROS, no GPU)"
KITTI_ENV = "KDBTS_KITTI_SAMPLE"
SHARED_KITTI = Path("../shared/data/kitti")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    p.add_argument("--frames", type=int, default=8, help="frames to process (default: 8)")
    p.add_argument(
        "--source",
        choices=("auto", "kitti", "synthetic"),
        default="auto",
        help="auto: the KITTI sample when --kitti exists, else a procedural street",
    )
    p.add_argument(
        "--kitti", type=Path, help=f"folder of the shared KITTI samples (default: {SHARED_KITTI}, or ${KITTI_ENV})"
    )


def run(args: argparse.Namespace) -> int:
    """Run a short sequence through the node's runner and write a bag and PNGs."""
    if args.frames < 1:
        raise ConfigError(f"--frames {args.frames}: need at least one frame")
    cfg = config(args)
    kitti = args.kitti if args.kitti is not None else Path(os.environ.get(KITTI_ENV, SHARED_KITTI))
    use_kitti = args.source == "kitti" or (args.source == "auto" and kitti.is_dir())
    if args.source == "kitti" and not kitti.is_dir():
        raise DatasetError(f"{kitti}: KITTI sample folder not found")
    seq = kitti_sample(kitti, args.frames) if use_kitti else synthetic_sample(args.frames)
    print(f"input: {seq.name}, {len(seq.images)} frames {seq.images[0].shape[1]}x{seq.images[0].shape[0]}")
    result = run_demo(cfg, args.out, seq)
    print(
        f"weights: {result['weights']}; head: {result['head']}; frames processed: {result['frames']}; "
        f"dropped: {result['drops'] or 'none'}"
    )
    print("last frame, seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in result["timings"].items()))
    print("wrote:")
    for label, path in result["files"].items():
        print(f"  {label:14s} {path}")
    print_counts(result["messages"])
    return 0
