"""``kdbts map-eval``: scene completion of the fused world map against velodyne scans (docs/map/README.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kdbts_ros.data.shared_sample import kitti360_sample, raw_sample
from kdbts_ros.evaluation.map_completion import MapEvalSettings
from kdbts_ros.evaluation.map_completion import run as evaluate
from kdbts_ros.runtime.config import load_runner_config

HELP = (
    "fuse a real drive into the world map two ways (KDBTS densities, expected depth only) and score both "
    "against its velodyne scans"
)
SAMPLES = {"raw_0052": raw_sample, "kitti360": kitti360_sample}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument(
        "--shared",
        type=Path,
        default=Path("../shared/data/kitti"),
        help="the shared KITTI folder (holds the drive 0052 and KITTI-360 samples)",
    )
    parser.add_argument("--sample", choices=sorted(SAMPLES), default="raw_0052", help="which shared recording")
    parser.add_argument("--config", type=Path, default=None, help="parameter file (the network: model.checkpoint)")
    parser.add_argument("--resolution", type=float, default=0.2, help="map voxel size, metres")
    parser.add_argument("--max-frames", type=int, default=0, help="first N posed frames only (0: all)")
    parser.add_argument("--out", type=Path, default=Path("docs/map"), help="folder of the picture and results.json")


def run(args: argparse.Namespace) -> int:
    """Evaluate, print and write ``<out>/<recording>_results.json``; 0 on success."""
    overrides = {"model.device": "cpu"} if args.config is None else {}
    settings = MapEvalSettings(resolution=args.resolution, max_frames=args.max_frames)
    cfg = load_runner_config(args.config, {**settings.grid, **overrides})
    rec = SAMPLES[args.sample](args.shared)
    results = evaluate(rec, cfg, args.out, settings)
    text = json.dumps(results, indent=2)
    print(text)
    (args.out / f"{rec.name}_results.json").write_text(text + "\n")
    return 0
