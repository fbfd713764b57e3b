#!/usr/bin/env python3
"""What stands directly ahead in a KITTI raw drive 0052 frame: the network's depth against the lidar's.

The README's figure is frame 7 (a car 7.4 m ahead). The frame's scan is projected into the network's own
camera as `kdbts eval` projects it (the nearest return per pixel); the pixels off the road
(evaluation/ground_split.py: nearer than the road plane by more than 25 %), within the central fifth of the
image's columns and nearer than 20 m are what stands ahead. Printed: their median lidar depth, the median
depth the network renders at the same pixels (the figure's depth, single-view head, full input size), the
ratio, and the median per-pixel relative error.

    python tools/car_ahead.py kdbts_ros/weights/kdbts_real.safetensors --frame 7
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.stages import Stages
from kdbts_ros.data import shared_sample
from kdbts_ros.data.records import read_velodyne
from kdbts_ros.evaluation.real_depth import lidar_truth
from kdbts_ros.runtime.pictures import figure

AHEAD_COLUMNS = 0.1  # half the central band of columns, a share of the image's width
AHEAD_RANGE_M = 20.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="network to score (a checkpoint file or release name)")
    p.add_argument("--frame", type=int, default=7, help="frame of drive 0052 with a lidar scan (0-9; default 7)")
    p.add_argument("--shared", type=Path, default=Path("../shared/data/kitti"), help="the shared KITTI samples")
    args = p.parse_args()
    cfg = PipelineConfig()
    cfg.model.checkpoint = args.checkpoint
    stages = Stages(cfg)
    rec = shared_sample.raw_sample(args.shared)
    f = rec.frames[args.frame]
    if f.velodyne is None:
        p.error(f"frame {args.frame} has no lidar scan")
    depth = figure(stages, f.image(0), rec.rig.cameras[0].lens(), "sv").depth
    lens = stages.canonical.lens()
    w = depth.shape[1]
    # the lidar as the evaluation sees it: the nearest return per pixel of the network's camera, split by the road
    lidar_depth, off = lidar_truth(read_velodyne(f.velodyne), f.T_cam_velo(0), lens.K, lens.pixel_rays())
    if off is None:
        p.error(f"frame {args.frame}: the scan shows no road")
    rows, cols = np.nonzero(np.isfinite(lidar_depth))
    lidar = lidar_depth[rows, cols]
    ahead = off[rows, cols] & (np.abs(cols + 0.5 - w / 2) < AHEAD_COLUMNS * w) & (lidar < AHEAD_RANGE_M)
    lidar, net = lidar[ahead], depth[rows[ahead], cols[ahead]]
    seen = np.isfinite(net)
    print(
        f"frame {args.frame}: {ahead.sum()} lidar pixels stand ahead; lidar median {np.median(lidar):.2f} m, "
        f"network median {np.nanmedian(net):.2f} m (ratio {np.nanmedian(net) / np.median(lidar):.3f}); "
        f"median per-pixel |error| {np.median(np.abs(net[seen] - lidar[seen]) / lidar[seen]):.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
