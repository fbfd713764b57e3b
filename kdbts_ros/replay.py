"""``kdbts replay``: a recorded ROS 2 bag through the node's runner; inputs plus outputs to a new bag.

The bag's messages go to :func:`kdbts_ros.runner.run_messages` in time order with their bag
stamps as the clock, so the outputs are those the node would publish while the bag plays with
``--clock``. Copies of the node's own output topics in the input bag are left out (a replay of
a replay does not duplicate them), as are messages of types the typestore does not know.
What the configuration names but the bag lacks is picked from the bag (:func:`fill_in_from_bag`):
its cameras when the configured first camera is absent, the root of its TF tree when the
configured fixed frame is.
"""
from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from rosbags.rosbag2 import Reader
from tqdm import tqdm

from . import messages as M
from .bag_info import bag_topics, camera_topics, tf_frames
from .config import PipelineConfig
from .core.pipeline import Outputs
from .data.bags import BagWriter
from .demo import depth_png, occupancy_png
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
    choices: list[str] = field(default_factory=list)


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


def fill_in_from_bag(cfg: PipelineConfig, bag: Path, cameras: bool = True, fixed_frame: bool = True) -> list[str]:
    """Check ``cfg`` against the bag and set in it what it names but the bag lacks; one line per choice made.

    ``cameras``: when the configured first camera's image or camera_info topic is absent, take
    every camera of the bag (image topics with a camera_info beside them). ``fixed_frame``: when
    the bag's TF never names the configured fixed frame, take the root of its TF tree.
    Raises ValueError when the first camera is absent and cannot (or may not) be taken from the bag.
    """
    topics = bag_topics(bag)
    choices = []
    absent = [t for t in (cfg.topics.images[0], cfg.topics.camera_infos[0]) if t not in topics]
    found = camera_topics(topics) if absent and cameras else []
    if absent and not found:
        raise ValueError(f"{bag} has no topic {' or '.join(absent)}"
                         + (" and no image topic with a camera_info beside it" if cameras else "")
                         + f" (topics: {sorted(topics)}); name the cameras with --images and --camera-infos")
    if found:
        cfg.topics.images, cfg.topics.camera_infos = [i for i, _ in found], [c for _, c in found]
        choices.append(f"cameras: {', '.join(i for i, _ in found)} (the bag's, as it has no {' or '.join(absent)}; "
                       "the first makes the outputs; choose with --images)")
    missing = [t for t in (*cfg.topics.images[1:], *cfg.topics.camera_infos[1:]) if t not in topics]
    if missing:  # the output camera's frames go on without them (counted as rig_frame_incomplete)
        log.warning("%s has no topic %s; rig frames are made without those cameras", bag, ", ".join(missing))
    if fixed_frame:
        frames, roots = tf_frames(bag)
        if roots and cfg.fixed_frame not in frames:
            choices.append(f"fixed frame: {roots[0]} (the root of the bag's TF; it has no {cfg.fixed_frame}; "
                           "choose with --fixed-frame)")
            cfg.fixed_frame = roots[0]
    return choices


def replay(cfg: PipelineConfig, bag_in: Path, bag_out: Path, storage: str = "mcap", png_dir: Path | None = None,
           progress: bool | None = None, pick_cameras: bool = True,
           pick_fixed_frame: bool = True, report: Callable[[str], None] | None = None) -> ReplayResult:
    """Run the bag at ``bag_in`` through the runner and write inputs plus outputs to ``bag_out`` (new).

    ``pick_cameras`` / ``pick_fixed_frame``: fill in from the bag what the config lacks
    (:func:`fill_in_from_bag`, on a copy of ``cfg``); each choice is passed to ``report`` before the run.
    """
    if bag_out.exists():
        raise FileExistsError(f"{bag_out} exists; rosbags writes new bags only")
    cfg = copy.deepcopy(cfg)
    choices = fill_in_from_bag(cfg, bag_in, pick_cameras, pick_fixed_frame)  # before the network is built
    for line in choices if report else ():
        report(line)
    skipped: Counter[str] = Counter()
    with Reader(bag_in) as reader:
        runner = FrameRunner(cfg)
        pngs = PngWriter(png_dir, cfg) if png_dir is not None else None
        messages = bag_messages(reader, output_topics(cfg), skipped)
        with BagWriter(bag_out, storage) as bag, tqdm(total=reader.message_count, unit="msg", desc=bag_in.name,
                                                      disable=None if progress is None else not progress) as bar:
            run_messages(runner, _counting(messages, bar), bag, pngs)
    return ReplayResult(runner.processed, dict(runner.drops), dict(bag.counts), dict(skipped),
                        faults=dict(runner.faults), pngs=pngs.files if pngs else [], choices=choices)


def _counting(messages: Iterator, bar: tqdm) -> Iterator:
    """Pass the messages through, advancing the progress bar."""
    for item in messages:
        bar.update()
        yield item
