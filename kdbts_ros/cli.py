"""``kdbts``: command-line tools that run the node's pipeline without ROS."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .config import load_config

DEFAULT_KITTI = Path(os.environ.get("KDBTS_KITTI_SAMPLE", "../shared/data/kitti"))


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML parameter file (the node's format); default: built-in")
    p.add_argument("--checkpoint", help="project checkpoint (.safetensors); default: seeded random weights")
    p.add_argument("--mode", choices=("sv", "mv", "auto"), help="density head (overrides the config)")


def _config(args: argparse.Namespace):
    overrides = {}
    if args.checkpoint:
        overrides["model.checkpoint"] = args.checkpoint
    if args.mode:
        overrides["mode"] = args.mode
    return load_config(args.config, overrides)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a short sequence through the node's runner and write a bag and PNGs."""
    from .demo import kitti_sample, run_demo, synthetic_sample

    cfg = _config(args)
    use_kitti = args.source == "kitti" or (args.source == "auto" and args.kitti.is_dir())
    if args.source == "kitti" and not args.kitti.is_dir():
        print(f"kdbts demo: KITTI sample folder {args.kitti} not found", file=sys.stderr)
        return 2
    seq = kitti_sample(args.kitti, args.frames) if use_kitti else synthetic_sample(args.frames)
    print(f"input: {seq.name}, {len(seq.images)} frames {seq.images[0].shape[1]}x{seq.images[0].shape[0]}")
    result = run_demo(cfg, args.out, seq)
    print(f"weights: {result['weights']}; head: {result['head']}; frames processed: {result['frames']}; "
          f"dropped: {result['drops'] or 'none'}")
    print("last frame, seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in result["timings"].items()))
    print("wrote:")
    for label, path in result["files"].items():
        print(f"  {label:14s} {path}")
    for topic, count in sorted(result["messages"].items()):
        print(f"    {count:4d} x {topic}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    """Print every parameter with its default, range and description."""
    from .config import PipelineConfig, iter_params, to_yaml

    if args.format == "yaml":
        print(to_yaml(PipelineConfig()), end="")
        return 0
    print("| parameter | default | range / choices | runtime | description |\n|---|---|---|---|---|")
    for s in iter_params(PipelineConfig()):
        allowed = f"[{s.range[0]:g}, {s.range[1]:g}]" if s.range else ", ".join(s.choices or ())
        print(f"| `{s.name}` | `{s.default!r}` | {allowed} | {'yes' if s.runtime else 'no'} | {s.description} |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``kdbts`` argument parser with one sub-command per tool."""
    parser = argparse.ArgumentParser(prog="kdbts", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every dropped input")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the node's pipeline on a short posed sequence (no ROS, no GPU)")
    _add_config_args(demo)
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    demo.add_argument("--frames", type=int, default=8, help="frames to process (default: 8)")
    demo.add_argument("--source", choices=("auto", "kitti", "synthetic"), default="auto",
                      help="auto: the KITTI sample when --kitti exists, else a procedural street")
    demo.add_argument("--kitti", type=Path, default=DEFAULT_KITTI,
                      help=f"folder of the shared KITTI samples (default: {DEFAULT_KITTI}, "
                           "or $KDBTS_KITTI_SAMPLE)")
    demo.set_defaults(func=cmd_demo)
    params = sub.add_parser("params", help="print the parameter table (node parameters and config keys)")
    params.add_argument("--format", choices=("yaml", "markdown"), default="yaml",
                        help="yaml: a commented parameter file like config/default.yaml")
    params.set_defaults(func=cmd_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kdbts`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
