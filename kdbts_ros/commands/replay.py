"""``kdbts replay``: a recorded ROS 2 bag through the node's runner; inputs plus outputs to a new bag.

The bag's messages go to :func:`kdbts_ros.runtime.offline.run_messages` in time order with their bag
stamps as the clock, so the outputs are those the node would publish while the bag plays with
``--clock``. Copies of the node's own output topics in the input bag are left out (a replay of
a replay does not duplicate them), as are messages of types the typestore does not know.
A bag cut short (a recording that ended with the power) replays up to its last complete
message; :attr:`ReplayResult.cut_short` says how much was read. What the configuration names
but the bag lacks is picked from the bag (:func:`fill_in_from_bag`): its cameras when the
configured first camera is absent, the root of its TF tree when the configured fixed frame is.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import logging
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kdbts_ros.commands.common import add_config_args, config, print_counts
from kdbts_ros.core.config import ConfigError, PipelineConfig
from kdbts_ros.core.frames import Outputs
from kdbts_ros.data.bags import BagWriter
from kdbts_ros.data.image_files import write_image
from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.messages.bag_info import camera_topics, info_beside, tf_frames
from kdbts_ros.messages.bag_reader import BagError, BagMessage, OpenBag, open_bag
from kdbts_ros.ros.tf_store import frame_runner
from kdbts_ros.runtime.offline import run_messages
from kdbts_ros.runtime.pictures import depth_png, figure, occupancy_png
from kdbts_ros.runtime.runner import FrameRunner

log = logging.getLogger("kdbts_ros")
# image messages of the output camera kept for the figures: the frame processed is the newest
# the runner could read, so a few cover corrupt ones arriving after it
RECENT_IMAGES = 4


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


def output_topics(cfg: PipelineConfig) -> set[str]:
    """Topics the node publishes."""
    t = cfg.topics
    return {
        t.occupancy,
        t.points,
        t.depth,
        t.depth_info,
        t.density_grid,
        t.latency,
        t.map,
        t.map_points,
        "/diagnostics",
    }


def bag_messages(bag: OpenBag, leave_out: set[str], skipped: Counter) -> Iterator[BagMessage]:
    """(stamp, topic, msgtype, bytes) of a bag in time order, without ``leave_out`` topics and unknown types."""
    known = cdr.typestore().types
    for stamp, topic, msgtype, data in bag.messages():
        if topic in leave_out or msgtype not in known:
            skipped[topic] += 1
            continue
        yield stamp, topic, msgtype, data


class PngWriter:
    """BEV occupancy, depth and figure pictures of each processed frame, named by its stamp.

    The figure needs the frame's image, which the runner does not keep (the node should not
    pay for pictures): :meth:`watch` holds on to the output camera's last image messages on
    their way to the runner, which processes only that camera's newest usable image, and the
    figure decodes it once more; K is the runner's. A figure costs an encode, a full-size
    depth render and a profile query per frame.
    """

    def __init__(self, folder: Path, runner: FrameRunner, pitch_deg: float = 0.0):
        self.folder, self.runner, self.cfg, self.pitch_deg = folder, runner, runner.cfg, pitch_deg
        folder.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self._images: deque[tuple[str, bytes]] = deque(maxlen=RECENT_IMAGES)  # msgtype and bytes, newest last

    def watch(self, messages: Iterator[tuple[int, str, str, bytes]]) -> Iterator[tuple[int, str, str, bytes]]:
        """Pass the messages through, keeping the output camera's last image messages."""
        topic = self.runner.cameras[0].image_topic
        for item in messages:
            if item[1] == topic:
                self._images.append((item[2], item[3]))
            yield item

    def __call__(self, out: Outputs) -> None:
        pictures = {
            "occupancy": occupancy_png(out.occupancy) if out.occupancy is not None else None,
            "depth": depth_png(out.depth, self.cfg.model.z_near, self.cfg.model.z_far)
            if out.depth is not None
            else None,
            "figure": self._figure(out.stamp_ns),
        }
        for kind, img in pictures.items():
            if img is not None:
                path = self.folder / f"{kind}_{out.stamp_ns}.png"
                write_image(path, img)
                self.files.append(path)

    def _figure(self, stamp_ns: int) -> np.ndarray | None:
        """The figure of the frame at ``stamp_ns``, or None when its image message is no longer kept."""
        for msgtype, data in reversed(self._images):
            try:
                msg = cdr.deserialize(data, msgtype)
            except cdr.ConversionError:
                continue  # the runner could not read it either (counted there as bad_image)
            if cdr.stamp_ns(msg.header.stamp) == stamp_ns:
                intrinsics = self.runner.cameras[0].intrinsics
                assert intrinsics is not None  # the frame was processed with them
                K = intrinsics[0]  # the runner's, still those of this frame
                return figure(
                    self.runner.stages, sensor_data.decode_image(msg, msgtype), K, pitch_deg=self.pitch_deg
                ).picture
        log.warning("no figure for frame %d: its image message is no longer at hand", stamp_ns)
        return None


def fill_in_from_bag(cfg: PipelineConfig, bag: OpenBag, cameras: bool = True, fixed_frame: bool = True) -> list[str]:
    """Check ``cfg`` against the bag and set in it what it names but the bag lacks; one line per choice made.

    ``cameras``: when the configured first camera's image or camera_info topic is absent, take
    every camera of the bag (image topics with a camera_info beside them). ``fixed_frame``: when
    the bag's TF never names the configured fixed frame, take the root of its TF tree.
    Raises ValueError when the first camera is absent and cannot (or may not) be taken from the bag.
    """
    topics = bag.topics
    choices = []
    absent = [t for t in (cfg.topics.images[0], cfg.topics.camera_infos[0]) if t not in topics]
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
    if fixed_frame:
        frames, roots = tf_frames(bag.path)  # its own reader: a salvaged bag counts what the replay reads
        if roots and cfg.fixed_frame not in frames:
            choices.append(
                f"fixed frame: {roots[0]} (the root of the bag's TF; it has no {cfg.fixed_frame}; "
                "choose with --fixed-frame)"
            )
            cfg.fixed_frame = roots[0]
    return choices


def replay(
    cfg: PipelineConfig,
    bag_in: Path,
    bag_out: Path,
    storage: str = "mcap",
    png_dir: Path | None = None,
    progress: bool | None = None,
    png_pitch_deg: float = 0.0,
    pick_cameras: bool = True,
    pick_fixed_frame: bool = True,
    report: Callable[[str], None] | None = None,
    save_map: Path | None = None,
) -> ReplayResult:
    """Run the bag at ``bag_in`` through the runner and write inputs plus outputs to ``bag_out`` (new).

    With ``png_dir``, each processed frame's pictures go there; ``png_pitch_deg`` tilts the
    figures' density profile (KITTI-360: 5). ``pick_cameras`` / ``pick_fixed_frame``: fill in
    from the bag what the config lacks (:func:`fill_in_from_bag`, on a copy of ``cfg``); each
    choice is passed to ``report`` before the run. ``save_map``: fuse the world map (``map.enabled``)
    and save it at the end as ``save_map`` + ``.pcd``/``.ply`` and ``.pgm`` + ``.yaml``.
    """
    if bag_out.exists():
        raise FileExistsError(f"{bag_out} exists; rosbags writes new bags only")
    skipped: Counter[str] = Counter()
    with open_bag(bag_in) as source:
        if source.cut_short:
            log.warning("%s", source.cut_short)
        messages = bag_messages(source, output_topics(cfg), skipped)
        first = next(messages, None)
        if first is None:  # run_messages needs at least one
            raise BagError(
                f"{source.cut_short}; nothing to replay"
                if source.cut_short
                else f"{bag_in}: no message on a topic to replay"
            )
        messages = itertools.chain([first], messages)
        cfg = copy.deepcopy(cfg)
        if save_map is not None:
            cfg.map.enabled = True
        # before the network is built
        choices = fill_in_from_bag(cfg, source, pick_cameras, pick_fixed_frame)
        if report:
            for line in choices:
                report(line)
        runner = frame_runner(cfg)
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


# the ``kdbts replay`` sub-command
HELP = "run a ROS 2 bag through the node's pipeline; write inputs plus outputs to a new bag (and optional PNGs)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("bag_in", type=Path, help="input ROS 2 bag (mcap or sqlite3), e.g. from kdbts kitti2bag")
    p.add_argument("bag_out", type=Path, help="output bag folder to create")
    p.add_argument(
        "--png",
        type=Path,
        metavar="DIR",
        help="also write occupancy_<stamp>.png, depth_<stamp>.png "
        "and figure_<stamp>.png (input, depth, density profile) of every processed frame; the figure "
        "encodes the image again and queries the profile: slower",
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
        "when the bag's TF lacks it, the root of its TF tree)",
    )


def run(args: argparse.Namespace) -> int:
    """Run a ROS 2 bag through the node's runner; write its messages plus the node's outputs to a new bag."""
    if args.camera_infos and not args.images:
        raise ConfigError("--camera-infos names the camera_info of each camera of --images; give --images too")
    chosen = {"fixed_frame": args.fixed_frame} if args.fixed_frame else {}
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
