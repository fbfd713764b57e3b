"""``kdbts import``: an official BTS / MVBTS / KDBTS checkpoint converted into the project's safetensors format.

(``import`` is a Python keyword, hence the module's name.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "convert an official BTS / MVBTS / KDBTS checkpoint (.pt) to .safetensors"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="official training checkpoint (torch.save file)")
    p.add_argument("out", type=Path, help="output .safetensors file")
    p.add_argument(
        "--camera",
        choices=("kitti-360", "kitti-raw"),
        help="the official config it was trained with, whose camera the checkpoint will state (default: as the "
        "checkpoint's path names its data set, kitti_360 or kitti; else kitti-360)",
    )


def run(args: argparse.Namespace) -> int:
    """Convert; refuse (exit 1) a network the checkpoint would load only partly."""
    from kdbts_ros.core.model.official import import_official, official_camera, save_imported

    model, report = import_official(args.checkpoint)
    print(f"architecture: {report.architecture}")
    print(f"mapped {report.mapped} tensors; heads present: {', '.join(report.heads) or 'none'}")
    for key in report.ignored:
        print(f"  ignored (renderer counter): {key}")
    for key in report.unexpected:
        print(f"  UNEXPECTED (not in the network): {key}")
    for key in report.missing:
        print(f"  MISSING (would stay random): {key}")
    if not report.complete:
        print("kdbts import: refusing to write a partially loaded network (see the keys above)", file=sys.stderr)
        return 1
    if report.absent:
        print(f"note: no weights for {', '.join(report.absent)}; that head is marked unavailable")
    camera = args.camera or official_camera(str(args.checkpoint))
    if camera is None:
        camera = "kitti-360"
        print("note: the path names no data set; the network is taken as trained in KITTI-360's camera (--camera)")
    print(f"camera: {camera} (the official config's)")
    save_imported(args.out, model, report, str(args.checkpoint), camera)
    print(f"wrote {args.out}")
    return 0
