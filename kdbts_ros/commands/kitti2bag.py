"""``kdbts kitti2bag``: a KITTI raw drive, odometry sequence or KITTI-360 sequence as a ROS 2 bag."""

from __future__ import annotations

import argparse
from pathlib import Path

from kdbts_ros.commands.common import add_dataset_args, print_counts

HELP = (
    "convert a KITTI raw drive, odometry sequence or KITTI-360 sequence into a ROS 2 bag (images, camera_info, "
    "TF, velodyne, /clock)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=("raw", "odometry", "kitti360"), help="dataset layout")
    p.add_argument(
        "source",
        type=Path,
        help="raw: the drive folder (image_0k/data); odometry: the sequence "
        "folder (image_k, calib.txt); kitti360: the dataset root",
    )
    p.add_argument("out", type=Path, help="bag folder to create")
    add_dataset_args(p)
    p.add_argument("--frames", type=int, default=0, help="convert only the first N frames (default: all)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage (default: mcap)")
    p.add_argument("--no-velodyne", action="store_true", help="leave the velodyne scans out")
    p.add_argument(
        "--no-clock",
        action="store_true",
        help="leave /clock out (for players that publish their own, e.g. ros2 bag play --clock)",
    )


def run(args: argparse.Namespace) -> int:
    """Load the recording, say what was found, write the bag and count its messages."""
    from kdbts_ros.data.datasets import conventions, load_recording
    from kdbts_ros.data.kitti_bag import write_recording_bag

    rec = load_recording(args.kind, args.source, args.calib, args.poses, args.sequence, args.cameras)
    posed = len(rec.posed())
    print(
        f"{rec.name}: {len(rec.frames)} frames ({posed} posed), cameras "
        f"{', '.join(f'{c.name} -> {c.frame_id}' for c in rec.rig.cameras)}"
    )
    print(f"poses: {rec.poses_from}; stamps: {rec.stamps_from}")
    counts = write_recording_bag(
        rec,
        args.out,
        conventions(args.kind),
        args.storage,
        args.frames or None,
        velodyne=not args.no_velodyne,
        clock=not args.no_clock,
    )
    print(f"wrote {args.out} ({args.storage})")
    print_counts(counts)
    return 0
