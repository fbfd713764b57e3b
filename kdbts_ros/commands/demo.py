"""``kdbts demo``: a short posed camera sequence through the node's own runner, written to disk.

The sequence is the real KITTI raw sample (drive 2011_09_26_0052, left colour
camera, ORB-SLAM poses) when its folder is present, else a procedural street.
Inputs are serialized exactly as a bag or a camera driver would deliver them
and go through :class:`FrameRunner`; the outputs land in an mcap bag and PNGs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TypedDict

import cv2

from kdbts_ros.commands.common import add_config_args, config, print_counts
from kdbts_ros.core.config import ConfigError, PipelineConfig
from kdbts_ros.data.bags import BagWriter
from kdbts_ros.data.image_files import write_image
from kdbts_ros.data.records import DatasetError
from kdbts_ros.data.sequences import Sequence, input_messages, kitti_sample, synthetic_sample
from kdbts_ros.ros.tf_store import frame_runner
from kdbts_ros.runtime.offline import run_messages
from kdbts_ros.runtime.pictures import depth_png, figure, occupancy_png


class DemoResult(TypedDict):
    """What :func:`run_demo` wrote and counted."""

    files: dict[str, Path]
    messages: dict[str, int]  # per topic
    frames: int
    drops: dict[str, int]
    head: str
    weights: object
    timings: dict[str, float]


def run_demo(cfg: PipelineConfig, out_dir: Path, seq: Sequence) -> DemoResult:
    """Feed the sequence through the runner; write the bag and the last frame's PNGs (and its figure)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bag_path = out_dir / "kdbts_demo"
    if bag_path.exists():
        for f in bag_path.iterdir():
            f.unlink()
        bag_path.rmdir()
    runner = frame_runner(cfg)
    with BagWriter(bag_path) as bag:
        last = run_messages(runner, input_messages(seq, cfg.fixed_frame, cfg.topics), bag)
    if last is None:
        raise RuntimeError(f"no frame was processed; drops: {dict(runner.drops)}")
    files = {
        "bag": bag_path,
        "occupancy_png": out_dir / "occupancy_bev.png",
        "depth_png": out_dir / "depth.png",
        "input_png": out_dir / "input.png",
        "figure_png": out_dir / "figure.png",
    }
    # every output was wanted (run_messages asks for all): the grid and depth are there
    assert last.occupancy is not None and last.depth is not None
    write_image(files["occupancy_png"], occupancy_png(last.occupancy))
    write_image(files["depth_png"], depth_png(last.depth, cfg.model.z_near, cfg.model.z_far))
    write_image(files["input_png"], cv2.cvtColor(seq.images[-1], cv2.COLOR_RGB2BGR))
    # the demo camera is level (DEMO_CAMERA): the profile needs no pitch
    write_image(files["figure_png"], figure(runner.stages, seq.images[-1], seq.K).picture)
    if runner.mapping.enabled:  # map.enabled in --config: the fused map beside the bag
        cloud, pgm, meta = runner.mapping.save(out_dir / "map", cfg.map.save_format)
        files.update(map_cloud=cloud, map_pgm=pgm, map_yaml=meta)
    return {
        "files": files,
        "messages": bag.counts,
        "frames": runner.processed,
        "drops": dict(runner.drops),
        "head": last.head,
        "weights": runner.stages.model_info.get("weights"),
        "timings": runner.timings,
    }


# the ``kdbts demo`` sub-command
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
