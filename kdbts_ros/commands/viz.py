"""``kdbts viz``: the figure (input, depth, bird's-eye density profile; paper Figs. 4-5) of one image file
(:mod:`kdbts_ros.runtime.viz`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kdbts_ros.commands.common import add_config_args, config
from kdbts_ros.runtime.viz import PRESETS, preset_intrinsics, render_figure

HELP = "one PNG: input, depth and bird's-eye density profile (paper Figs. 4-5)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument(
        "image",
        type=Path,
        help="input image (any size and aspect: seen through the network's camera, shown at its width)",
    )
    p.add_argument("--out", type=Path, default=Path("kdbts_viz.png"), help="output PNG (default: kdbts_viz.png)")
    p.add_argument(
        "--preset",
        choices=("kitti360", "kitti_raw"),
        default="kitti360",
        help="default intrinsics (normalised, so any image size) and camera pitch",
    )
    p.add_argument(
        "--intrinsics",
        type=float,
        nargs=4,
        metavar=("FX", "FY", "CX", "CY"),
        help="pixel intrinsics of the given image instead of a preset",
    )
    p.add_argument("--head", choices=("sv", "mv"), help="density head (default: sv)")


def run(args: argparse.Namespace) -> int:
    """Write one PNG with the input, its depth and its bird's-eye density profile."""
    import cv2

    from kdbts_ros.data.image_files import read_bgr_image, write_image
    from kdbts_ros.runtime.pictures import figure_head

    rgb = cv2.cvtColor(read_bgr_image(args.image), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    if args.intrinsics:
        fx, fy, cx, cy = args.intrinsics
        K, pitch = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), 0.0
    else:
        K, pitch = preset_intrinsics(args.preset, w, h), PRESETS[args.preset][1]
    cfg = config(args)
    head = args.head or figure_head(cfg)
    _, _, picture = render_figure(cfg, rgb, K, head, pitch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_image(args.out, picture)
    print(f"head {head}; wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")
    return 0
