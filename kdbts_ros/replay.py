"""``kdbts replay``: a recorded ROS 2 bag through the node's runner; inputs plus outputs to a new bag.

The bag's messages go to :func:`kdbts_ros.runner.run_messages` in time order with their bag
stamps as the clock, so the outputs are those the node would publish while the bag plays with
``--clock``. Copies of the node's own output topics in the input bag are left out (a replay of
a replay does not duplicate them), as are messages of types the typestore does not know.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from rosbags.rosbag2 import Reader
from tqdm import tqdm

from . import messages as M
from .config import PipelineConfig
from .core.pipeline import Outputs
from .data.bags import BagWriter
from .pictures import depth_png, occupancy_png
from .runner import FrameRunner, run_messages

log = logging.getLogger("kdbts_ros")


@dataclass
class ReplayResult:
    """Counts of a replay: frames processed, drops and faults by reason, messages written and left out per topic."""

    processed: int
    drops: dict[str, int]
    written: dict[str, int]
    skipped: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    pngs: list[Path] = field(default_factory=list)


def output_topics(cfg: PipelineConfig) -> set[str]:
    """Topics the node publishes."""
    t = cfg.topics
    return {t.occupancy, t.points, t.depth, t.depth_info, t.density_grid, t.latency, "/diagnostics"}


def bag_messages(reader: Reader, leave_out: set[str], skipped: Counter) -> Iterator[tuple[int, str, str, bytes]]:
    """(stamp, topic, msgtype, bytes) of a bag in time order, without ``leave_out`` topics and unknown types."""
    known = M.typestore().types
    for conn, stamp, data in reader.messages():
        if conn.topic in leave_out or conn.msgtype not in known:
            skipped[conn.topic] += 1
            continue
        yield stamp, conn.topic, conn.msgtype, bytes(data)


class PngWriter:
    """BEV occupancy and depth pictures of each processed frame, named by its stamp."""

    def __init__(self, folder: Path, cfg: PipelineConfig):
        self.folder, self.cfg = folder, cfg
        folder.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []

    def __call__(self, out: Outputs) -> None:
        pictures = {"occupancy": occupancy_png(out.occupancy) if out.occupancy is not None else None,
                    "depth": depth_png(out.depth, self.cfg.model.z_near, self.cfg.model.z_far)
                    if out.depth is not None else None}
        for kind, img in pictures.items():
            if img is not None:
                path = self.folder / f"{kind}_{out.stamp_ns}.png"
                if not cv2.imwrite(str(path), img):
                    raise OSError(f"could not write {path}")
                self.files.append(path)


def replay(cfg: PipelineConfig, bag_in: Path, bag_out: Path, storage: str = "mcap", png_dir: Path | None = None,
           runner: FrameRunner | None = None, progress: bool | None = None) -> ReplayResult:
    """Run the bag at ``bag_in`` through the runner and write inputs plus outputs to ``bag_out`` (new)."""
    if bag_out.exists():
        raise FileExistsError(f"{bag_out} exists; rosbags writes new bags only")
    skipped: Counter[str] = Counter()
    with Reader(bag_in) as reader:
        topics = {c.topic for c in reader.connections}
        for t in (cfg.topics.images[0], cfg.topics.camera_infos[0]):
            if t not in topics:  # checked before the network is built
                raise ValueError(f"{bag_in} has no topic {t} (topics: {sorted(topics)}); "
                                 "pick a config whose topics.images / topics.camera_infos match")
        missing = [t for t in (*cfg.topics.images[1:], *cfg.topics.camera_infos[1:]) if t not in topics]
        if missing:  # the output camera's frames go on without them (counted as rig_frame_incomplete)
            log.warning("%s has no topic %s; rig frames are made without those cameras", bag_in, ", ".join(missing))
        runner = runner or FrameRunner(cfg)
        pngs = PngWriter(png_dir, cfg) if png_dir is not None else None
        messages = bag_messages(reader, output_topics(cfg), skipped)
        with BagWriter(bag_out, storage) as bag, tqdm(total=reader.message_count, unit="msg", desc=bag_in.name,
                                                      disable=None if progress is None else not progress) as bar:
            run_messages(runner, _counting(messages, bar), bag, pngs)
    return ReplayResult(runner.processed, dict(runner.drops), dict(bag.counts), dict(skipped),
                        faults=dict(runner.faults), pngs=pngs.files if pngs else [])


def _counting(messages: Iterator, bar: tqdm) -> Iterator:
    """Pass the messages through, advancing the progress bar."""
    for item in messages:
        bar.update()
        yield item
