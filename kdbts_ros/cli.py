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


def cmd_import(args: argparse.Namespace) -> int:
    """Convert an official BTS / MVBTS / KDBTS checkpoint into the project's safetensors format."""
    from .core.model.checkpoint import CheckpointError, save_checkpoint
    from .core.model.network import absent_head_prefixes
    from .core.model.official import import_official

    try:
        model, report = import_official(args.checkpoint)
    except CheckpointError as exc:
        print(f"kdbts import: {exc}", file=sys.stderr)
        return 1
    print(f"architecture: {report.architecture}")
    print(f"mapped {report.mapped} tensors; heads present: {', '.join(report.heads) or 'none'}")
    for key in report.ignored:
        print(f"  ignored (renderer counter): {key}")
    for key in report.unexpected:
        print(f"  UNEXPECTED (not in the network): {key}")
    for key in report.missing:
        print(f"  MISSING (would stay random): {key}")
    # keys of a head the checkpoint does not have (BTS: no multi-view head) may be missing; no others
    absent = absent_head_prefixes(report.heads)
    if report.unexpected or not report.heads or not all(k.startswith(absent) for k in report.missing):
        print("kdbts import: refusing to write a partially loaded network (see the keys above)", file=sys.stderr)
        return 1
    if absent:
        print(f"note: no weights for {', '.join(absent)}; that head is marked unavailable")
    model.available_heads = report.heads
    save_checkpoint(args.out, model, {"source": str(args.checkpoint), "imported_from": "official",
                                      "image_height": 192, "image_width": 640})
    print(f"wrote {args.out}")
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    """Write one PNG with the input, its depth and its bird's-eye density profile."""
    import cv2
    import numpy as np

    from .viz import PRESETS, preset_intrinsics, render_figure

    bgr = cv2.imread(str(args.image))
    if bgr is None:
        print(f"kdbts viz: cannot read image {args.image}", file=sys.stderr)
        return 1
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    if args.intrinsics:
        fx, fy, cx, cy = args.intrinsics
        K, pitch = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), 0.0
    else:
        K, pitch = preset_intrinsics(args.preset, w, h), PRESETS[args.preset][1]
    cfg = _config(args)
    head = args.head or ("mv" if cfg.mode == "mv" else "sv")
    _, _, picture = render_figure(cfg, rgb, K, head, pitch)
    cv2.imwrite(str(args.out), picture)
    print(f"head {head}; wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")
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
    imp = sub.add_parser("import", help="convert an official BTS / MVBTS / KDBTS checkpoint (.pt) to .safetensors")
    imp.add_argument("checkpoint", type=Path, help="official training checkpoint (torch.save file)")
    imp.add_argument("out", type=Path, help="output .safetensors file")
    imp.set_defaults(func=cmd_import)
    viz = sub.add_parser("viz", help="one PNG: input, depth and bird's-eye density profile (paper Figs. 4-5)")
    _add_config_args(viz)
    viz.add_argument("image", type=Path, help="input image (any size; resized to the network input)")
    viz.add_argument("--out", type=Path, default=Path("kdbts_viz.png"), help="output PNG (default: kdbts_viz.png)")
    viz.add_argument("--preset", choices=("kitti360", "kitti_raw"), default="kitti360",
                     help="default intrinsics (normalised, so any image size) and camera pitch")
    viz.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                     help="pixel intrinsics of the given image instead of a preset")
    viz.add_argument("--head", choices=("sv", "mv"), help="density head (default: sv)")
    viz.set_defaults(func=cmd_viz)
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
