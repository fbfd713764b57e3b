"""A recorded ROS 2 bag through the node's runner; inputs plus outputs to a new bag (``kdbts replay``).

The bag's messages go to :func:`kdbts_ros.runtime.offline.run_messages` in time order with their bag
stamps as the clock, so the outputs are those the node would publish while the bag plays with
``--clock``. Copies of the node's own output topics in the input bag are left out (a replay of
a replay does not duplicate them), as are messages of types the typestore does not know.
A bag cut short (a recording that ended with the power) replays up to its last complete
message; :attr:`ReplayResult.cut_short` says how much was read. What the configuration names
but the bag lacks is picked from the bag (:func:`fill_in_from_bag`): its cameras when the
configured first camera is absent, the root of its TF tree when the configured fixed frame is.
A bag of the ``kitti2bag`` tool (:mod:`kdbts_ros.messages.kitti2bag`) is recognised and replays
with its layout's settings: its left camera, fixed frame ``world``, the odometry layouts' camera
frame (``topics.camera_frame``: their images' frame is not in their TF tree), and its images taken for
the rectified ones they are (``topics.image_geometry``: the raw layout's camera_info carries the
unrectified K and D beside P), and the planner grid where its TF tree has a level frame with the road's
height known (``planner.frame`` and ``ground_z``, when the configured frame is not in it).
ROS 1 ``.bag`` files are read as they are (:mod:`kdbts_ros.messages.bag_reader`).
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from kdbts_ros.core.settings import ConfigError
from kdbts_ros.data.bags import BagWriter
from kdbts_ros.messages import cdr, kitti2bag
from kdbts_ros.messages.bag_info import camera_topics, tf_frames
from kdbts_ros.messages.bag_reader import BagError, BagMessage, OpenBag, open_bag
from kdbts_ros.messages.topics import output_topics
from kdbts_ros.runtime.config import RunnerConfig
from kdbts_ros.runtime.offline import run_messages
from kdbts_ros.runtime.replay_pngs import PngWriter
from kdbts_ros.runtime.runner import FrameRunner

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
    cut_short: str | None = None  # the input bag's defect and how much of it was read; None: read whole
    choices: list[str] = field(default_factory=list)
    map_files: list[Path] = field(default_factory=list)  # with save_map: the world map's files


def bag_messages(bag: OpenBag, leave_out: set[str], skipped: Counter) -> Iterator[BagMessage]:
    """(stamp, topic, msgtype, bytes) of a bag in time order, without ``leave_out`` topics and unknown types."""
    known = cdr.typestore().types
    for stamp, topic, msgtype, data in bag.messages():
        if topic in leave_out or msgtype not in known:
            skipped[topic] += 1
            continue
        yield stamp, topic, msgtype, data


def fill_in_from_bag(
    cfg: RunnerConfig, bag: OpenBag, cameras: bool = True, fixed_frame: bool = True, camera_frame: bool = True
) -> list[str]:
    """Check ``cfg`` against the bag and set in it what it names but the bag lacks; one line per choice made.

    A kitti2bag bag (:func:`kdbts_ros.messages.kitti2bag.detect`) gives its left camera (when
    ``cameras`` and the configured first camera is absent), its fixed frame (when ``fixed_frame`` and
    the configured one is not in its TF) and its camera frame (when ``camera_frame``, the
    configuration sets none and that camera is the first). Otherwise ``cameras``: when the configured
    first camera's image or camera_info topic is absent, take every camera of the bag (image topics
    with a camera_info beside them); ``fixed_frame``: when the bag's TF never names the configured
    fixed frame, take the root of its TF tree.
    Raises ValueError when the first camera is absent and cannot (or may not) be taken from the bag.
    """
    topics = bag.topics
    choices = []
    frames, roots = tf_frames(bag.path)  # its own reader: a salvaged bag counts what the replay reads
    layout = kitti2bag.detect(topics, frames)
    absent = [t for t in (cfg.topics.images[0], cfg.topics.camera_infos[0]) if t not in topics]
    if layout is not None:
        if cameras and absent:
            cfg.topics.images, cfg.topics.camera_infos, absent = [layout.image], [layout.info], []
        if camera_frame and not cfg.topics.camera_frame and cfg.topics.images[0] == layout.image:
            cfg.topics.camera_frame = layout.camera_frame
        if fixed_frame and cfg.fixed_frame not in frames:
            cfg.fixed_frame = layout.fixed_frame
        if cfg.topics.images[0] == layout.image:  # KITTI's images are rectified, whatever kitti2bag names them
            cfg.topics.image_geometry = "rectified"
        planner = ""
        if cfg.planner.frame not in (*frames, "camera"):
            cfg.planner.frame = layout.planner_frame or cfg.planner.frame  # "": none, the fixed frame's fallback
            cfg.planner.ground_z = layout.ground_z
            where = "on the road" if layout.ground_z == 0 else f"{-layout.ground_z:g} m above the road"
            planner = f"planner grid in {layout.planner_frame or cfg.fixed_frame + ' turned z up'} ({where})"
        choices.append(layout.describe(cfg.topics.images[0], cfg.topics.camera_frame, cfg.fixed_frame, planner))
    found = camera_topics(topics) if absent and cameras else []
    if absent and not found:
        raise ConfigError(
            f"{bag.path} has no topic {' or '.join(absent)}"
            + (" and no image topic with a camera_info beside it" if cameras else "")
            + f" (topics: {sorted(topics)}); name the cameras with --images and --camera-infos"
        )
    if found:
        cfg.topics.images, cfg.topics.camera_infos = [i for i, _ in found], [c for _, c in found]
        choices.append(
            f"cameras: {', '.join(i for i, _ in found)} (the bag's, as it has no {' or '.join(absent)}; "
            "the first makes the outputs; choose with --images)"
        )
    missing = [t for t in (*cfg.topics.images[1:], *cfg.topics.camera_infos[1:]) if t not in topics]
    if missing:  # the output camera's frames go on without them (counted as rig_frame_incomplete)
        log.warning("%s has no topic %s; rig frames are made without those cameras", bag.path, ", ".join(missing))
    if fixed_frame and roots and cfg.fixed_frame not in frames:
        choices.append(
            f"fixed frame: {roots[0]} (the root of the bag's TF; it has no {cfg.fixed_frame}; "
            "choose with --fixed-frame)"
        )
        cfg.fixed_frame = roots[0]
    return choices


def replay(
    cfg: RunnerConfig,
    bag_in: Path,
    bag_out: Path,
    storage: str = "mcap",
    png_dir: Path | None = None,
    progress: bool | None = None,
    png_pitch_deg: float = 0.0,
    pick_cameras: bool = True,
    pick_fixed_frame: bool = True,
    pick_camera_frame: bool = True,
    report: Callable[[str], None] | None = None,
    save_map: Path | None = None,
) -> ReplayResult:
    """Run the bag at ``bag_in`` through the runner and write inputs plus outputs to ``bag_out`` (new).

    With ``png_dir``, each processed frame's pictures go there; ``png_pitch_deg`` tilts the
    figures' density profile (KITTI-360: 5). ``pick_cameras`` / ``pick_fixed_frame`` / ``pick_camera_frame``: fill in
    from the bag what the config lacks (:func:`fill_in_from_bag`, on a copy of ``cfg``); each
    choice is passed to ``report`` before the run. ``save_map``: fuse the world map (``map.enabled``)
    and save it at the end as ``save_map`` + ``.pcd``/``.ply`` and ``.pgm`` + ``.yaml``.
    """
    if bag_out.exists():
        raise FileExistsError(f"{bag_out} exists; rosbags writes new bags only")
    skipped: Counter[str] = Counter()
    cfg = copy.deepcopy(cfg)
    cfg.topics = cfg.topics.resolved()  # relative names in the root namespace, as the bag's topics are
    with open_bag(bag_in) as source:
        if source.cut_short:
            log.warning("%s", source.cut_short)
        messages = bag_messages(source, output_topics(cfg.topics), skipped)
        first = next(messages, None)
        if first is None:  # run_messages needs at least one
            raise BagError(
                f"{source.cut_short}; nothing to replay"
                if source.cut_short
                else f"{bag_in}: no message on a topic to replay"
            )
        messages = itertools.chain([first], messages)
        if save_map is not None:
            cfg.map.enabled = True
        # before the network is built
        choices = fill_in_from_bag(cfg, source, pick_cameras, pick_fixed_frame, pick_camera_frame)
        if report:
            for line in choices:
                report(line)
        runner = FrameRunner(cfg)  # the built-in TF buffer: tf2_ros is the node's choice
        pngs = PngWriter(png_dir, runner, png_pitch_deg) if png_dir is not None else None
        if pngs is not None:
            messages = pngs.watch(messages)
        with (
            BagWriter(bag_out, storage) as bag,
            tqdm(
                total=source.message_count,
                unit="msg",
                desc=bag_in.name,
                disable=None if progress is None else not progress,
            ) as bar,
        ):
            run_messages(runner, _counting(messages, bar), bag, pngs)
        cut_short = source.cut_short  # now that every message was read: how many there were
        map_files = (
            runner.mapping.save(save_map, cfg.map.save_format) if save_map is not None and runner.processed else []
        )
    return ReplayResult(
        runner.processed,
        dict(runner.drops),
        dict(bag.counts),
        dict(skipped),
        faults=dict(runner.faults),
        pngs=pngs.files if pngs else [],
        cut_short=cut_short,
        choices=choices,
        map_files=map_files,
    )


def _counting(messages: Iterator, bar: tqdm) -> Iterator:
    """Pass the messages through, advancing the progress bar."""
    for item in messages:
        bar.update()
        yield item
