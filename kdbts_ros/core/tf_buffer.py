"""A TF buffer without ROS: static and time-stamped transforms, tree walks and interpolation.

Used where tf2_ros is not installed (PyPI environments, replay). Like tf2, each
child frame has one parent; a lookup composes the edges up to the common
ancestor, interpolating each dynamic edge at the requested stamp.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from kdbts_ros.core import geometry


class TfError(LookupError):
    """A failed lookup; ``reason`` is 'unknown_frame', 'disconnected', 'past', 'future' or 'invalid'."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class TfStore(Protocol):
    """A TF buffer the runner can feed and query: this module's TfBuffer or tf2_ros's, adapted.

    ``lookup`` raises TfError with reason 'unknown_frame' (a frame never seen),
    'disconnected' (frames in separate trees), 'past' / 'future' (the stamp lies
    before / after the data of an edge on the path, beyond the extrapolation
    limit) or 'invalid' (tf2 only: a malformed frame id or another tf2 error).
    The runner retries 'future', 'unknown_frame' and 'disconnected', which later data can cure.
    """

    def set_transform(self, parent: str, child: str, stamp_ns: int, T: np.ndarray, static: bool) -> None:
        """Add T_parent_child at a stamp; a static transform holds for all time."""

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """T_target_source (4x4) at the stamp; raises TfError."""

    def clear(self) -> None:
        """Forget the dynamic transforms, keeping the static ones (for a jump back in time)."""


FRAMES_NAMED = 12  # a frame list in a message names this many, then counts the rest


def frame_list(frames: list[str]) -> str:
    """'its frames: a, b, c' (the first FRAMES_NAMED, then how many more), or 'it has no frame yet'."""
    if not frames:
        return "it has no frame yet"
    more = f" and {len(frames) - FRAMES_NAMED} more" if len(frames) > FRAMES_NAMED else ""
    return f"its frames: {', '.join(frames[:FRAMES_NAMED])}{more}"


@dataclass
class _Edge:
    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)


class TfBuffer:
    """The built-in TfStore: transforms keyed by child frame, with a bounded history per edge."""

    def __init__(self, cache_ns: int = 10_000_000_000, extrapolation_limit_ns: int = 0):
        self.cache_ns = cache_ns
        # how far a lookup may go past either end of a dynamic edge's data, holding the end value;
        # 0 by default because tf2 itself never extrapolates
        self.extrapolation_limit_ns = extrapolation_limit_ns
        self._edges: dict[str, _Edge] = {}
        # the node adds transforms in its subscription thread and looks poses up in its inference thread
        self._lock = threading.Lock()

    @classmethod
    def from_seconds(cls, cache_s: float, extrapolation_limit_s: float) -> TfBuffer:
        """A buffer keeping ``cache_s`` of history that extrapolates up to ``extrapolation_limit_s``."""
        return cls(round(cache_s * 1e9), round(extrapolation_limit_s * 1e9))

    def clear(self) -> None:
        """Forget all dynamic transforms (static ones stay, as in tf2 after a time jump)."""
        with self._lock:
            self._edges = {k: e for k, e in self._edges.items() if e.static}

    def set_transform(self, parent: str, child: str, stamp_ns: int, T: np.ndarray, static: bool) -> None:
        """Add T_parent_child at a stamp; a static transform holds for all time."""
        with self._lock:
            self._set(parent, child, stamp_ns, T, static)

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """T_target_source at the stamp: maps points in ``source`` into ``target``."""
        with self._lock:
            return self._lookup(target, source, stamp_ns)

    def _set(self, parent: str, child: str, stamp_ns: int, T: np.ndarray, static: bool) -> None:
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or edge.static != static:
            edge = self._edges[child] = _Edge(parent, static)
        if static:
            edge.stamps, edge.poses = [0], [T]
            return
        if edge.stamps and stamp_ns < edge.stamps[-1] - self.cache_ns:
            # far older than the history: time jumped back (a looping bag), start the edge afresh
            edge.stamps, edge.poses = [], []
        i = bisect.bisect_left(edge.stamps, stamp_ns)
        if i < len(edge.stamps) and edge.stamps[i] == stamp_ns:
            edge.poses[i] = T
        else:
            edge.stamps.insert(i, stamp_ns)
            edge.poses.insert(i, T)
        cut = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
        del edge.stamps[:cut], edge.poses[:cut]

    def _edge_at(self, child: str, stamp_ns: int) -> np.ndarray:
        edge = self._edges[child]
        if edge.static:
            return edge.poses[0]
        s = edge.stamps
        if stamp_ns < s[0] - self.extrapolation_limit_ns:
            raise TfError("past", f"{edge.parent}->{child}: {stamp_ns} ns is before the oldest transform ({s[0]} ns)")
        if stamp_ns > s[-1] + self.extrapolation_limit_ns:
            raise TfError("future", f"{edge.parent}->{child}: {stamp_ns} ns is after the newest transform ({s[-1]} ns)")
        i = bisect.bisect_left(s, stamp_ns)
        if i == 0:
            return edge.poses[0]
        if i == len(s):
            return edge.poses[-1]
        a = (stamp_ns - s[i - 1]) / (s[i] - s[i - 1])
        return geometry.interpolate(edge.poses[i - 1], edge.poses[i], a)

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
            if len(chain) > 256:
                raise TfError("disconnected", f"TF loop above {frame!r}")
        return chain

    def _known(self, frame: str) -> bool:
        return frame in self._edges or any(e.parent == frame for e in self._edges.values())

    def _lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        for f in (target, source):
            if not self._known(f):
                frames = sorted({*self._edges, *(e.parent for e in self._edges.values())})
                raise TfError("unknown_frame", f"frame {f!r} does not exist in TF ({frame_list(frames)})")
        up_s, up_t = self._chain(source), self._chain(target)
        common = next((f for f in up_s if f in up_t), None)
        if common is None:
            raise TfError("disconnected", f"{source!r} and {target!r} are not connected in TF")
        T_common_source = np.eye(4)
        for child in reversed(up_s[: up_s.index(common)]):
            T_common_source = T_common_source @ self._edge_at(child, stamp_ns)
        T_common_target = np.eye(4)
        for child in reversed(up_t[: up_t.index(common)]):
            T_common_target = T_common_target @ self._edge_at(child, stamp_ns)
        return geometry.invert(T_common_target) @ T_common_source
