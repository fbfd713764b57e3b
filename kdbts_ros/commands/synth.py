"""``kdbts synth``: procedural multi-camera street sequences in the KITTI-style synthetic folder format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write procedural multi-camera street sequences (KITTI-style folder)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="dataset root; one folder seed_<NNNN> per seed plus rig.json")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, nargs="+", default=[0], help="scene seeds (default: 0)")
    seeds.add_argument(
        "--seed-range",
        type=int,
        nargs=2,
        metavar=("START", "STOP"),
        help="seeds START, START+1, ..., STOP-1 (instead of --seeds)",
    )
    p.add_argument("--frames", type=int, default=40, help="frames per sequence (default: 40)")
    p.add_argument("--step", type=float, default=1.0, help="metres driven per frame (default: 1.0)")
    p.add_argument("--width", type=int, default=320, help="image width in pixels (default: 320)")
    p.add_argument("--height", type=int, default=96, help="image height in pixels (default: 96)")
    p.add_argument(
        "--bag", action="store_true", help="also write each sequence as an mcap ROS 2 bag (tf, images, camera_info)"
    )


def run(args: argparse.Namespace) -> int:
    """Write one sequence per seed, plus the rig description."""
    from kdbts_ros.data.rig import RigConfig
    from kdbts_ros.data.synth_folder import write_sequence

    seeds = list(range(*args.seed_range)) if args.seed_range else args.seeds
    if not seeds or args.frames < 1 or args.width < 1 or args.height < 1:
        print("kdbts synth: need at least one seed, one frame and a positive image size", file=sys.stderr)
        return 2
    rig = RigConfig(width=args.width, height=args.height)
    for seed in seeds:
        seq = write_sequence(args.out, seed, args.frames, rig, step_m=args.step, bag=args.bag)
        print(
            f"wrote {seq}: {args.frames} frames x {len(rig.cameras)} cameras "
            f"({', '.join(c.name for c in rig.cameras)}) at {rig.width}x{rig.height}"
            + (f"; bag {seq / 'bag'}" if args.bag else "")
        )
    print(f"rig: {args.out / 'rig.json'}")
    return 0
