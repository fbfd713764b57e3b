"""The pictures of each frame a replay processes: BEV occupancy, depth, its confidence and the figure, named by the
frame's stamp."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kdbts_ros.core.frames import Outputs
from kdbts_ros.data.image_files import write_image
from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.runtime.pictures import (
    figure,
    labelled_confidence_png,
    labelled_depth_png,
    labelled_occupancy_png,
    published_bird_view,
)
from kdbts_ros.runtime.runner import FrameRunner

log = logging.getLogger("kdbts_ros")
# image messages of the output camera kept for the figures: the frame processed is the newest
# the runner could read, so a few cover corrupt ones arriving after it
RECENT_IMAGES = 4


class PngWriter:
    """BEV occupancy, depth, depth confidence and figure pictures of each processed frame, named by its stamp.

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
            "occupancy": labelled_occupancy_png(published_bird_view(out)) if out.occupancy is not None else None,
            "depth": labelled_depth_png(out.depth, self.cfg.model.z_near, self.cfg.model.z_far)
            if out.depth is not None
            else None,
            "confidence": labelled_confidence_png(out.depth_confidence) if out.depth_confidence is not None else None,
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
                return figure(  # the runner's lens, still that of this frame
                    self.runner.stages,
                    sensor_data.decode_image(msg, msgtype, self.cfg.topics.mono16_bits),
                    intrinsics.lens,
                    pitch_deg=self.pitch_deg,
                ).picture
        log.warning("no figure for frame %d: its image message is no longer at hand", stamp_ns)
        return None
