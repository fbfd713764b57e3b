"""``kdbts replay``: a ROS 2 or ROS 1 bag through the node's runner (:mod:`kdbts_ros.runtime.replay`); inputs
plus outputs to a new bag."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdbts_ros.commands.common import add_config_args, config, print_counts
from kdbts_ros.core.settings import ConfigError
from kdbts_ros.messages.bag_info import info_beside
from kdbts_ros.runtime.replay import replay

HELP = (
    "run a bag (ROS 2, or ROS 1 .bag; kitti2bag's layouts recognised) through the node's pipeline; write inputs "
    "plus outputs to a new ROS 2 bag (and optional PNGs)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument(
        "bag_in",
        type=Path,
        help="input bag: ROS 2 (a folder, .mcap or .db3) or ROS 1 (.bag), e.g. from kitti2bag or kdbts kitti2bag",
    )
    p.add_argument("bag_out", type=Path, help="output bag folder to create")
    p.add_argument(
        "--png",
        type=Path,
        metavar="DIR",
        help="also write occupancy_<stamp>.png, depth_<stamp>.png, confidence_<stamp>.png (the depth's, "
        "black 0 to white 1) and figure_<stamp>.png (input, depth, density profile) of every processed "
        "frame; the figure encodes the image again and queries the profile: slower",
    )
    p.add_argument(
        "--pitch",
        type=float,
        default=0.0,
        metavar="DEG",
        help="camera pitch to the road, for the figures' density profile (default: 0; KITTI-360: 5)",
    )
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output storage (default: mcap)")
    p.add_argument(
        "--images",
        nargs="+",
        metavar="TOPIC",
        help="image topic of each camera, the first the one the "
        "outputs are made for (default: the config's; when the bag lacks them, every image topic "
        "of the bag with a camera_info beside it)",
    )
    p.add_argument(
        "--camera-infos",
        nargs="+",
        metavar="TOPIC",
        help="camera_info topic of each camera of --images (default: <namespace>/camera_info beside each)",
    )
    p.add_argument(
        "--save-map",
        type=Path,
        metavar="STEM",
        help="fuse the world map (sets map.enabled) and save "
        "it at the end: STEM.pcd (or .ply, map.save_format; occupied voxels) and STEM.pgm + STEM.yaml "
        "(nav2 map_server)",
    )
    p.add_argument(
        "--fixed-frame",
        metavar="FRAME",
        help="frame poses are looked up in (default: the config's; "
        "when the bag's TF lacks it, world for a kitti2bag bag, else the root of its TF tree)",
    )
    p.add_argument(
        "--camera-frame",
        metavar="FRAME",
        help="TF frame of the first camera's images, for images whose frame_id is not in the TF tree "
        "(sets topics.camera_frame; default: the config's; kitti2bag odometry bags: camera_left)",
    )


def run(args: argparse.Namespace) -> int:
    """Run a ROS 2 bag through the node's runner; write its messages plus the node's outputs to a new bag."""
    if args.camera_infos and not args.images:
        raise ConfigError("--camera-infos names the camera_info of each camera of --images; give --images too")
    chosen: dict[str, object] = {"fixed_frame": args.fixed_frame} if args.fixed_frame else {}
    if args.camera_frame:
        chosen["topics.camera_frame"] = args.camera_frame
    if args.images:
        chosen["topics.images"] = args.images
        chosen["topics.camera_infos"] = args.camera_infos or [info_beside(t) for t in args.images]
    result = replay(
        config(args, chosen),
        args.bag_in,
        args.bag_out,
        args.storage,
        args.png,
        png_pitch_deg=args.pitch,
        pick_cameras=not args.images,
        pick_fixed_frame=not args.fixed_frame,
        pick_camera_frame=not args.camera_frame,
        report=print,
        save_map=args.save_map,
    )
    if result.cut_short and result.processed:
        print(f"kdbts replay: warning: {result.cut_short}", file=sys.stderr)
    print(f"frames processed: {result.processed}")
    print("dropped: " + (", ".join(f"{k} {v}" for k, v in sorted(result.drops.items())) or "none"))
    print("faults worked around: " + (", ".join(f"{k} {v}" for k, v in sorted(result.faults.items())) or "none"))
    if result.skipped:
        print(
            "left out (node output topics or unknown types): "
            + ", ".join(f"{k} {v}" for k, v in sorted(result.skipped.items()))
        )
    print(f"wrote {args.bag_out} ({args.storage})")
    print_counts(result.written)
    if args.png:
        print(f"wrote {len(result.pngs)} PNGs to {args.png}")
    if result.map_files:
        print("wrote the map: " + ", ".join(str(f) for f in result.map_files))
    if not result.processed:  # one line: what was read of a bag cut short, and that it held no whole frame
        print(
            f"kdbts replay: {result.cut_short or args.bag_in}; no frame was processed"
            + (" (see the drops above)" if result.drops else ""),
            file=sys.stderr,
        )
        return 1
    return 0
