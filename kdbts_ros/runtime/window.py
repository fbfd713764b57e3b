"""The sliding window of recent posed keyframes over all cameras, each encoded once, and the keyframe rule."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from kdbts_ros.core import geometry
from kdbts_ros.core.config import KeyframeConfig
from kdbts_ros.core.frames import EncodedFrame


class FrameWindow:
    """The last ``size`` keyframe images and the rule that chooses them.

    The one owner of both: :meth:`offer` decides whether a rig frame is a keyframe and
    keeps its images if so, :meth:`reset` (the runner's time-jump rule,
    :mod:`kdbts_ros.runtime.time_jumps`) forgets images and the rule's last keyframe.
    """

    def __init__(self, size: int, keyframe: KeyframeConfig):
        self.entries: deque[EncodedFrame] = deque(maxlen=size)
        self.rule = KeyframeRule(keyframe)

    def __len__(self) -> int:
        return len(self.entries)

    def offer(self, entries: Sequence[EncodedFrame]) -> bool:
        """Keep a rig frame's images (the output camera's last, so it is the newest) when it is a keyframe.

        The last entry's stamp and pose decide (:class:`KeyframeRule`); returns whether it was kept.
        """
        ref = entries[-1]
        if not self.rule.is_keyframe(ref.stamp_ns, ref.T_fixed_cam):
            return False
        for e in entries:
            self.push(e)
        return True

    def push(self, entry: EncodedFrame) -> None:
        """Add the newest frame whatever the rule says; older frames fall out when the window is full."""
        self.entries.append(entry)

    def resize(self, size: int) -> None:
        """Keep the newest ``size`` frames."""
        self.entries = deque(self.entries, maxlen=size)

    def reset(self) -> None:
        """Forget every frame and the last keyframe (time went backwards): the next posed frame is a keyframe."""
        self.entries.clear()
        self.rule.reset()

    def posed(self) -> list[EncodedFrame]:
        """Frames with a pose, newest first."""
        return [e for e in reversed(self.entries) if e.T_fixed_cam is not None]


class KeyframeRule:
    """Decides whether a posed rig frame enters the window: moved, turned or aged enough since the last one."""

    def __init__(self, cfg: KeyframeConfig):
        self.cfg = cfg
        self.last: tuple[int, np.ndarray] | None = None

    def reset(self) -> None:
        """Start afresh: the next posed frame is a keyframe."""
        self.last = None

    def is_keyframe(self, stamp_ns: int, T_fixed_cam: np.ndarray | None) -> bool:
        """True for a keyframe (and remembers it); frames without a pose never are (no view can use them)."""
        if T_fixed_cam is None:
            return False
        if self.last is not None:
            stamp0, T0 = self.last
            rel = geometry.invert(T0) @ T_fixed_cam
            moved = float(np.linalg.norm(rel[:3, 3]))
            turned = float(np.degrees(np.arccos(np.clip((np.trace(rel[:3, :3]) - 1.0) / 2.0, -1.0, 1.0))))
            aged = (stamp_ns - stamp0) * 1e-9
            if stamp_ns >= stamp0 and moved < self.cfg.distance and turned < self.cfg.angle and aged < self.cfg.max_age:
                return False
        self.last = (stamp_ns, T_fixed_cam)
        return True
