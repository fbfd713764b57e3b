"""The cameras of a rig: their records, the images waiting in their queues and the pairing into rig frames.

The first camera's newest image is the frame the outputs are made for; the other cameras'
images closest in time join it as one rig frame. :class:`RigInputs` holds no lock of its own:
the runner calls it with its lock held (the node's callbacks run in other threads).
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from kdbts_ros.core.lens import Lens
from kdbts_ros.messages import sensor_data
from kdbts_ros.messages.sensor_data import CameraModel
from kdbts_ros.runtime.accounting import Accounting
from kdbts_ros.runtime.config import RunnerConfig

log = logging.getLogger("kdbts_ros")
SECONDARY_QUEUE = 4  # images kept per other camera while they wait for a partner


@dataclass
class Image:
    msg: Any  # the deserialized Image or CompressedImage (decoded only when used)
    stamp_ns: int
    arrival_ns: int
    rgb: np.ndarray | None = None  # kept once decoded, while the frame waits for its partners
    decode_s: float = 0.0


class CameraInput:
    """One camera: its topics, intrinsics, last image format and images waiting to be used."""

    def __init__(self, index: int, image_topic: str, info_topic: str, rectified: bool):
        self.index, self.image_topic, self.info_topic = index, image_topic, info_topic
        self.rectified = rectified  # read through camera_info's P (else K and D)
        self.msgtype = sensor_data.image_msgtype(image_topic)
        self.intrinsics: CameraModel | None = None
        self.format: tuple[str, int, int] | None = None
        self.waiting: deque[Image] = deque()
        self.received = 0
        self.dropped: Counter[str] = Counter()  # this camera's received images lost, by reason
        self.last_stamp_ns: int | None = None  # None: no image yet, or forgotten at a time jump
        self.absent = False  # missed a rig frame: not waited for until it sends again


class Wait(Exception):
    """A frame's pose, intrinsics or partner image may still arrive: try again on the next step."""


class Dropped(Exception):
    """An image cannot be used; the reason has been counted."""


# a camera's image with its lens and pose in the fixed frame
Partner = tuple[CameraInput, Image, Lens, np.ndarray]


class RigInputs:
    """The configured cameras (the first is the output camera), their queues and rig-frame pairing."""

    def __init__(self, cfg: RunnerConfig, accounting: Accounting):
        """``cfg`` is the live config (mode and sync tolerance are read when used)."""
        self.cfg, self.accounting = cfg, accounting
        self.cameras = [
            CameraInput(i, img, info, cfg.topics.is_rectified(img))
            for i, (img, info) in enumerate(zip(cfg.topics.images, cfg.topics.camera_infos))
        ]
        self.image_topics = {c.image_topic: c.index for c in self.cameras}
        self.info_topics = {c.info_topic: c.index for c in self.cameras}

    @property
    def pending(self) -> Image | None:
        """The output camera's newest image not yet processed."""
        waiting = self.cameras[0].waiting
        return waiting[-1] if waiting else None

    def tf_frame(self, cam: CameraInput, img: Image) -> str:
        """The TF frame of a camera's image: ``topics.camera_frame`` for the first camera when set, else its
        header's frame_id."""
        override = self.cfg.topics.camera_frame
        return override if override and cam.index == 0 else img.msg.header.frame_id.lstrip("/")

    def drop(self, cam: CameraInput, reason: str, message: str) -> None:
        """Count a received image of ``cam`` as lost."""
        self.accounting.drop(reason, message, cam.dropped)

    def set_intrinsics(self, cam: CameraInput, info: CameraModel) -> None:
        """Take a camera's lens; logged the first time, a change counted as a fault."""
        old, lens = cam.intrinsics, info.lens
        if old is None:
            K = lens.K
            log.info(
                "intrinsics from %s (%s, %s): fx %.2f fy %.2f cx %.2f cy %.2f (%dx%d)%s",
                cam.info_topic,
                info.source,
                "rectified" if cam.rectified else "raw",
                K[0, 0],
                K[1, 1],
                K[0, 2],
                K[1, 2],
                lens.width,
                lens.height,
                f", {lens.model} D {np.round(lens.D, 4).tolist()}" if lens.distorted else "",
            )
        elif old.lens != lens:
            self.accounting.fault(
                "camera_info_changed",
                f"{cam.info_topic}: intrinsics changed from fx {old.lens.K[0, 0]:.2f} {old.lens.width}x"
                f"{old.lens.height} to fx {lens.K[0, 0]:.2f} {lens.width}x{lens.height}",
            )
        cam.intrinsics = info

    def queue(self, cam: CameraInput, msg: Any, stamp: int, arrival_ns: int) -> None:
        """Queue an image of a camera; the output camera keeps only its newest, older ones are dropped."""
        cam.last_stamp_ns = stamp
        cam.received += 1
        cam.absent = False
        if cam.index > 0 and self.cfg.mode == "sv":
            return  # the single-view head reads the first camera only (counted as received)
        limit = 1 if cam.index == 0 else SECONDARY_QUEUE
        while len(cam.waiting) >= limit:
            cam.waiting.popleft()
            self.drop(cam, "superseded", f"{cam.image_topic}: a newer image arrived before this one was processed")
        cam.waiting.append(Image(msg, stamp, arrival_ns))

    def drop_image(self, cam: CameraInput, reason: str, message: str) -> None:
        """Count an image not handed over (received and dropped, so its camera's counts add up)."""
        cam.received += 1
        self.drop(cam, reason, f"{cam.image_topic}: {message}")

    def discard_waiting(self, reason: str, message: str) -> None:
        """Drop every waiting image of every camera, counted under ``reason``."""
        for c in self.cameras:
            for _ in range(len(c.waiting)):
                self.drop(c, reason, f"{c.image_topic}: {message}")
            c.waiting.clear()

    def discard(self, cam: CameraInput, img: Image, reason: str, message: str) -> NoReturn:
        """Drop a waiting image for a counted reason; raises Dropped."""
        if img in cam.waiting:
            cam.waiting.remove(img)
        self.drop(cam, reason, message)
        raise Dropped

    def partners(
        self, img: Image, timed_out: bool, resolve: Callable[[CameraInput, Image, bool], tuple[Lens, np.ndarray]]
    ) -> list[Partner]:
        """Each other camera's image closest to ``img`` within the sync tolerance, with intrinsics and pose.

        Waits (up to ``tf_timeout``) while a camera's partner image may still come: it has
        sent images, none newer than this rig frame yet, and did not miss the last one. A
        camera without a partner is left out of this rig frame (counted). ``resolve`` gives
        an image's lens and pose, or raises Wait or Dropped.
        """
        tol = int(self.cfg.sync_tolerance * 1e9)
        found = []
        for cam in self.cameras[1:]:
            near = [w for w in cam.waiting if abs(w.stamp_ns - img.stamp_ns) <= tol]
            partner = min(near, key=lambda w: abs(w.stamp_ns - img.stamp_ns)) if near else None
            if partner is None:
                may_come = (
                    cam.received > 0
                    and not cam.absent
                    and (cam.last_stamp_ns is None or cam.last_stamp_ns < img.stamp_ns + tol)
                )  # None: reset by a time jump
                if may_come and not timed_out:
                    raise Wait
                if may_come:  # it timed out: the next rig frames do not wait for it
                    cam.absent = True
                self.accounting.fault(
                    "rig_frame_incomplete",
                    f"no image of {cam.image_topic} within {self.cfg.sync_tolerance} s of the output camera's",
                )
                continue
            try:
                lens, T = resolve(cam, partner, timed_out)
            except Dropped:
                continue
            found.append((cam, partner, lens, T))
        return found

    def consume(self, img: Image, found: list[Partner]) -> None:
        """Take the partners out of their queues and drop what is older than the rig frame."""
        tol = int(self.cfg.sync_tolerance * 1e9)
        for cam in self.cameras[1:]:
            used = next((p for c, p, _, _ in found if c is cam), None)
            horizon = used.stamp_ns if used is not None else img.stamp_ns - tol
            for w in [w for w in cam.waiting if w.stamp_ns <= horizon]:
                cam.waiting.remove(w)
                if w is not used:
                    self.drop(cam, "superseded", f"{cam.image_topic}: older than the rig frame processed")
