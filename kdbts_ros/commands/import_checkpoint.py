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


def run(args: argparse.Namespace) -> int:
    """Convert; refuse (exit 1) a network the checkpoint would load only partly."""
    from kdbts_ros.core.model.official import import_official, save_imported

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
    save_imported(args.out, model, report, str(args.checkpoint))
    print(f"wrote {args.out}")
    return 0
