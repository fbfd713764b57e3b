"""``kdbts kitti2bag``: a KITTI raw drive, odometry sequence or KITTI-360 sequence as a bag (ROS 2 or ROS 1).

Kinds ``raw``, ``odometry``, ``kitti360`` write the project's own layout; ``raw_synced``,
``odom_gray``, ``odom_color`` write the layouts of the ``kitti2bag`` tool
(:mod:`kdbts_ros.data.kitti2bag_layouts`), the bags most people have.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kdbts_ros.commands.common import add_dataset_args, print_counts
from kdbts_ros.data.bags import STORAGES, storage_for
from kdbts_ros.messages.kitti2bag import LAYOUTS

HELP = (
    "convert a KITTI raw drive, odometry sequence or KITTI-360 sequence into a bag (images, camera_info, "
    "TF, velodyne, /clock), or into one of the kitti2bag tool's layouts; ROS 2 or ROS 1 (.bag)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "kind",
        choices=("raw", "odometry", "kitti360", *LAYOUTS),
        help="dataset layout; raw_synced (a raw drive), odom_gray, odom_color (an odometry sequence): "
        "the kitti2bag tool's topics, frames, TF and camera_info",
    )
    p.add_argument(
        "source",
        type=Path,
        help="raw, raw_synced: the drive folder (image_0k/data); odometry, odom_*: the sequence "
        "folder (image_k, calib.txt); kitti360: the dataset root",
    )
    p.add_argument("out", type=Path, help="bag to create: a folder (ROS 2), or a .bag file (ROS 1)")
    add_dataset_args(p)
    p.add_argument("--frames", type=int, default=0, help="convert only the first N frames (default: all)")
    p.add_argument(
        "--storage",
        choices=STORAGES,
        help="bag storage (default: rosbag1 when OUT ends in .bag, else mcap)",
    )
    p.add_argument("--no-velodyne", action="store_true", help="leave the velodyne scans out (own layouts)")
    p.add_argument(
        "--no-clock",
        action="store_true",
        help="leave /clock out (own layouts; for players that publish their own, e.g. ros2 bag play --clock)",
    )
    p.add_argument(
        "--colour-from-grey",
        action="store_true",
        help="odom_color of a sequence without colour frames: write its grey image_0 / image_1 as 3-channel "
        "colour frames",
    )


def run(args: argparse.Namespace) -> int:
    """Load the recording, say what was found, write the bag and count its messages."""
    from kdbts_ros.data.datasets import conventions, load_recording
    from kdbts_ros.data.kitti2bag_layouts import write_kitti2bag
    from kdbts_ros.data.kitti_bag import write_recording_bag

    storage = storage_for(args.out, args.storage)
    if args.kind in LAYOUTS:
        kind = "raw" if args.kind == "raw_synced" else "odometry"
        cameras = args.cameras
        if args.kind != "raw_synced" and not cameras:  # the layout's pair, where the sequence has it
            numbers = (0, 1) if args.colour_from_grey or args.kind == "odom_gray" else (2, 3)
            cameras = [f"image_{k}" for k in numbers if (args.source / f"image_{k}").is_dir()] or None
        rec = load_recording(kind, args.source, args.calib, args.poses, None, cameras)
    else:
        rec = load_recording(args.kind, args.source, args.calib, args.poses, args.sequence, args.cameras)
    posed = len(rec.posed())
    print(
        f"{rec.name}: {len(rec.frames)} frames ({posed} posed), cameras "
        f"{', '.join(f'{c.name} -> {c.frame_id}' for c in rec.rig.cameras)}"
    )
    print(f"poses: {rec.poses_from}; stamps: {rec.stamps_from}")
    if args.kind in LAYOUTS:
        calib = args.calib or (args.source.parent if args.kind == "raw_synced" else args.source / "calib.txt")
        if args.colour_from_grey and args.kind == "odom_color":
            print("odom_color from grey frames: image_0 / image_1 written as 3-channel colour")
        counts = write_kitti2bag(
            rec,
            args.kind,
            args.out,
            calib,
            storage,
            args.frames or None,
            args.colour_from_grey and args.kind == "odom_color",
        )
    else:
        counts = write_recording_bag(
            rec,
            args.out,
            conventions(args.kind),
            storage,
            args.frames or None,
            velodyne=not args.no_velodyne,
            clock=not args.no_clock,
        )
    print(f"wrote {args.out} ({storage})")
    print_counts(counts)
    return 0
