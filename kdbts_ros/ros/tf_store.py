"""The TF store behind the node's runner: tf2_ros's Buffer when it is installed, else the built-in one.

tf2_ros (and with it rclpy) is imported only when the tf2 store is made, so the
built-in path keeps working in PyPI environments that have neither.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from kdbts_ros.core import geometry
from kdbts_ros.core.stages import Stages
from kdbts_ros.core.tf_buffer import TfBuffer, TfError, TfStore, frame_list
from kdbts_ros.messages.topics import NODE_NAME
from kdbts_ros.runtime.config import RunnerConfig
from kdbts_ros.runtime.runner import FrameRunner

if TYPE_CHECKING:
    from geometry_msgs.msg import TransformStamped

AUTHORITY = "kdbts_ros"
# tf2's one-sample / empty-cache message names no direction: "... at time <requested>, but only
# time <stored> is in the buffer" (tf2/src/cache.cpp, createExtrapolationException1)
_ONLY_TIME = re.compile(r"at time (\d+\.\d+), but only time (\d+\.\d+)")


def _extrapolation_reason(message: str) -> str:
    """'past' or 'future' from the text of a tf2 ExtrapolationException (Python has one class for all)."""
    if "into the future" in message:
        return "future"
    if "into the past" in message:
        return "past"
    only = _ONLY_TIME.search(message)
    # after clear() the stored time is 0, so new data is due: 'future', which the runner waits for
    return "future" if only is None or float(only[1]) > float(only[2]) else "past"


class Tf2Store:
    """TfStore over tf2_ros.Buffer: tf2's tree, cache and interpolation, errors as TfError."""

    def __init__(self, cache_s: float, extrapolation_limit_s: float):
        import tf2_ros
        from geometry_msgs.msg import TransformStamped
        from rclpy.duration import Duration
        from rclpy.time import Time

        self._tf2, self._msg, self._time = tf2_ros, TransformStamped, Time
        self._buffer = tf2_ros.Buffer(cache_time=Duration(nanoseconds=round(cache_s * 1e9)))
        self.extrapolation_limit_ns = round(extrapolation_limit_s * 1e9)
        # checked in order; the rest is 'invalid': InvalidArgumentException (an empty frame id or
        # one starting with '/') and the base class (TimeoutException, unused without a timeout)
        self._reasons = (
            (tf2_ros.LookupException, "unknown_frame"),
            (tf2_ros.ConnectivityException, "disconnected"),
            (tf2_ros.TransformException, "invalid"),
        )

    def set_transform(self, parent: str, child: str, stamp_ns: int, T: np.ndarray, static: bool) -> None:
        """Add T_parent_child at a stamp; a static transform holds for all time."""
        ts = self._msg()
        ts.header.frame_id, ts.child_frame_id = parent, child
        ts.header.stamp = self._time(nanoseconds=stamp_ns).to_msg()
        t, q = geometry.from_matrix(T)
        tr, rot = ts.transform.translation, ts.transform.rotation
        tr.x, tr.y, tr.z = (float(v) for v in t)
        rot.x, rot.y, rot.z, rot.w = (float(v) for v in q)
        if static:
            self._buffer.set_transform_static(ts, AUTHORITY)
        else:
            self._buffer.set_transform(ts, AUTHORITY)

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """T_target_source at the stamp, within the extrapolation limit; raises TfError."""
        try:
            return self._matrix(self._lookup(target, source, stamp_ns))
        except TfError as error:
            if error.reason not in ("past", "future") or self.extrapolation_limit_ns <= 0:
                raise
            # tf2 has no extrapolation limit (it never extrapolates; tf2_ros's timeout only waits
            # for data), so hold the end value as the built-in does: the newest data common to
            # the chain (time 0), if it lies within the limit of the stamp. tf2 exposes no oldest
            # stamp, so a 'past' stamp is held only when the newest data is that close.
            try:
                latest = self._lookup(target, source, 0)
            except TfError:
                raise error from None
            latest_ns = self._time.from_msg(latest.header.stamp).nanoseconds
            if abs(latest_ns - stamp_ns) > self.extrapolation_limit_ns:
                raise
            return self._matrix(latest)

    def clear(self) -> None:
        """Forget the dynamic transforms; tf2's static caches ignore clear(), so statics stay."""
        self._buffer.clear()

    def _lookup(self, target: str, source: str, stamp_ns: int) -> TransformStamped:
        """tf2's TransformStamped at the stamp (0: the newest common data); errors as TfError."""
        try:
            return self._buffer.lookup_transform(target, source, self._time(nanoseconds=stamp_ns))
        except self._tf2.ExtrapolationException as exc:
            raise TfError(_extrapolation_reason(str(exc)), str(exc)) from exc
        except self._tf2.TransformException as exc:
            reason = next(r for cls, r in self._reasons if isinstance(exc, cls))
            frames = self._frames() if reason == "unknown_frame" else []
            raise TfError(reason, f"{exc} ({frame_list(frames)})" if frames else str(exc)) from exc

    def _frames(self) -> list[str]:
        """tf2's frame names (BufferCore._getFrameStrings), sorted; [] where this tf2 has no such call."""
        names = getattr(self._buffer, "_getFrameStrings", None)
        try:
            return sorted(names()) if names is not None else []
        except Exception:  # a tf2 whose call differs: the message goes without the list
            return []

    @staticmethod
    def _matrix(ts: TransformStamped) -> np.ndarray:
        """4x4 T_parent_child of a TransformStamped."""
        tr, rot = ts.transform.translation, ts.transform.rotation
        return geometry.to_matrix(np.array([tr.x, tr.y, tr.z]), np.array([rot.x, rot.y, rot.z, rot.w]))


def make_tf_store(cache_s: float, extrapolation_limit_s: float, prefer_tf2: bool = True) -> tuple[TfStore, str]:
    """tf2_ros's buffer if preferred and importable, else the built-in; with its name for logs."""
    if prefer_tf2:
        try:
            return Tf2Store(cache_s, extrapolation_limit_s), "tf2_ros"
        except ImportError:
            pass  # no ROS 2 install (PyPI environment): the built-in buffer does the same job
    return TfBuffer.from_seconds(cache_s, extrapolation_limit_s), "builtin"


def frame_runner(
    cfg: RunnerConfig, stages: Stages | None = None, prefer_tf2: bool = True, node_name: str = "/" + NODE_NAME
) -> FrameRunner:
    """The runner with tf2_ros's TF buffer where installed and preferred (the node: ``tf_builtin`` false), as the
    node and the benchmarks run it (offline tools build theirs in the runtime layer, with the built-in buffer).
    ``node_name``: the node's fully qualified name, for its diagnostics."""
    tf, name = make_tf_store(cfg.tf_cache, cfg.tf_extrapolation, prefer_tf2=prefer_tf2)
    return FrameRunner(cfg, stages, tf, name, node_name)
