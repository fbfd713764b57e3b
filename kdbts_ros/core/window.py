"""The sliding window of recent posed frames, each encoded once."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class WindowEntry:
    """One encoded frame: its features, normalised intrinsics, pose in the fixed frame and folded head maps."""

    stamp_ns: int
    features: torch.Tensor        # (C, H, W)
    Kn: torch.Tensor              # (3, 3)
    T_fixed_cam: np.ndarray | None
    planes: dict[str, torch.Tensor] = field(default_factory=dict)  # head -> folded map (model/folded.py)


class FrameWindow:
    """The last ``size`` frames; cleared when time runs backwards (a bag that loops)."""

    def __init__(self, size: int):
        self.entries: deque[WindowEntry] = deque(maxlen=size)

    def push(self, entry: WindowEntry) -> None:
        """Add the newest frame; older frames fall out when the window is full."""
        if self.entries and entry.stamp_ns < self.entries[-1].stamp_ns:
            self.entries.clear()
        self.entries.append(entry)

    def resize(self, size: int) -> None:
        """Keep the newest ``size`` frames."""
        self.entries = deque(self.entries, maxlen=size)

    def posed(self) -> list[WindowEntry]:
        """Frames with a pose, newest first."""
        return [e for e in reversed(self.entries) if e.T_fixed_cam is not None]
