"""A short posed camera sequence through the node's own runner, written to disk (``kdbts demo``).

Inputs are serialized exactly as a bag or a camera driver would deliver them
and go through :class:`FrameRunner`; the outputs land in an mcap bag and PNGs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import cv2

from kdbts_ros.core.frames import Frame
from kdbts_ros.data.bags import BagWriter
from kdbts_ros.data.image_files import write_image
from kdbts_ros.data.sequences import Sequence, input_messages
from kdbts_ros.runtime.config import RunnerConfig
from kdbts_ros.runtime.offline import run_messages
from kdbts_ros.runtime.pictures import (
    figure,
    labelled_confidence_png,
    labelled_depth_png,
    labelled_occupancy_png,
    published_bird_view,
)
from kdbts_ros.runtime.runner import FrameRunner


class DemoResult(TypedDict):
    """What :func:`run_demo` wrote and counted."""

    files: dict[str, Path]
    messages: dict[str, int]  # per topic
    frames: int
    drops: dict[str, int]
    head: str
    weights: object
    timings: dict[str, float]


def run_demo(cfg: RunnerConfig, out_dir: Path, seq: Sequence) -> DemoResult:
    """Feed the sequence through the runner; write the bag and the last frame's PNGs (and its figure)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bag_path = out_dir / "kdbts_demo"
    if bag_path.exists():
        for f in bag_path.iterdir():
            f.unlink()
        bag_path.rmdir()
    runner = FrameRunner(cfg)  # the built-in TF buffer: tf2_ros is the node's choice
    with BagWriter(bag_path) as bag:
        last = run_messages(runner, input_messages(seq, cfg.fixed_frame, cfg.topics), bag)
    if last is None:
        raise RuntimeError(f"no frame was processed; drops: {dict(runner.drops)}")
    files = {
        "bag": bag_path,
        "occupancy_png": out_dir / "occupancy_bev.png",
        "depth_png": out_dir / "depth.png",
        "confidence_png": out_dir / "depth_confidence.png",
        "input_png": out_dir / "input.png",
        "figure_png": out_dir / "figure.png",
    }
    # every output was wanted (run_messages asks for all): the grid and depth are there
    assert last.occupancy is not None and last.depth is not None and last.depth_confidence is not None
    write_image(files["occupancy_png"], labelled_occupancy_png(published_bird_view(last)))
    write_image(files["depth_png"], labelled_depth_png(last.depth, cfg.model.z_near, cfg.model.z_far))
    write_image(files["confidence_png"], labelled_confidence_png(last.depth_confidence))
    write_image(files["input_png"], cv2.cvtColor(seq.images[-1], cv2.COLOR_RGB2BGR))
    # the demo camera is level (DEMO_CAMERA): the profile needs no pitch
    write_image(
        files["figure_png"], figure(runner.stages, seq.images[-1], Frame(seq.images[-1], seq.K, 0, "").lens()).picture
    )
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
