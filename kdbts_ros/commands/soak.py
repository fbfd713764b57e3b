"""``kdbts soak``: the live rclpy node under sustained overload: latency percentiles, drops and memory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdbts_ros.commands.common import write_report

HELP = (
    "the live rclpy node fed faster than it keeps up: latency percentiles per tenth of the run, drops and memory "
    "(not a test: run it on a quiet machine)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML parameter file (the node's format); default: built-in")
    p.add_argument(
        "--network",
        default="",
        help="resnet50 (official network at 192x640, seeded random weights), embedded (the shipped "
        "KDBTS network) or a checkpoint path (default: the config's model.checkpoint, i.e. embedded "
        "unless the config names another)",
    )
    p.add_argument("--frames", type=int, default=10000, help="rig frames to publish (default: 10000)")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="publish rate in Hz; 0: measure the node's sustained rate in a closed loop first and "
        "publish at --load-factor times it (default: 0)",
    )
    p.add_argument(
        "--load-factor",
        type=float,
        default=2.0,
        help="publish rate over the measured sustained rate, with --rate 0 (default: 2)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=[640, 192],
        metavar=("W", "H"),
        help="input image size in pixels (default: 640 192)",
    )
    p.add_argument(
        "--cameras",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: a second camera on /right/image_raw/compressed (jpeg), so rig frames and decoding "
        "are exercised (default: 1)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("soak_out"), help="folder for soak.json and soak.md (default: soak_out)"
    )
    p.add_argument(
        "--map",
        action="store_true",
        help="set map.enabled: the node fuses every frame into the world "
        "map and publishes it, so its memory is part of the per-tenth RSS (default: the config's)",
    )
    p.add_argument("--progress", action="store_true", help="print a line per tenth of the run")


def run(args: argparse.Namespace) -> int:
    """Publish to the node in-process and report; JSON and Markdown into --out."""
    from kdbts_ros.bench import soak
    from kdbts_ros.runtime.config import load_runner_config

    if args.frames < 20 or args.load_factor <= 0 or min(args.image_size) < 8:
        print("kdbts soak: need --frames >= 20, --load-factor > 0 and an image size of at least 8x8", file=sys.stderr)
        return 2
    cfg = soak.soak_config(load_runner_config(args.config), args.network, args.cameras)
    cfg.map.enabled = cfg.map.enabled or args.map
    report = soak.run(
        cfg,
        args.frames,
        args.rate,
        args.load_factor,
        tuple(args.image_size),
        progress=print if args.progress else lambda _line: None,
    )
    write_report(args.out, "soak", report, soak.markdown(report))
    return 0
