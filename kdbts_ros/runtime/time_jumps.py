"""The time-jump rule of the runner: when time counts as having jumped, and the one reset that follows.

Time jumps back when a bag loops or sim time restarts, and forward when a recording has a gap.
Four clocks are watched, against one threshold (:data:`THRESHOLD_NS`, 1 s: transforms of
different publishers, and the node's clock against image arrivals, are that much out of order
without any jump):

- image stamps: a camera's image older than its previous one by more than the threshold
  (fault ``time_jump_back``); the images waiting then belong to the old timeline and are
  dropped (counted as ``time_jump_back``), and every camera's last stamp is forgotten, so one
  jump seen by several cameras is reported once;
- TF stamps: a dynamic transform older than the newest by more than the threshold (fault
  ``tf_time_jump_back``); the dynamic TF history is cleared;
- the clock (the node's, under ``use_sim_time``): an image that arrived more than the threshold
  after "now" waits for its pose afresh from now (no reset: the stamps tell whether time jumped);
- processed frames: a frame later than the previous one by more than ``map.max_time_gap``.

A jump issues one reset: the window forgets its frames and its last keyframe, the dynamic TF
history is cleared and the map stage applies ``map.time_jump_rule`` (:meth:`MapStage.time_jump`,
which counts ``map_reset_time_jump`` itself). A bag loop is seen on TF and on the images both:
the first of them to see it resets, the other only counts its own fault (and drops its waiting
images, or clears the TF history it holds from the old timeline). A forward gap resets the
window and the map but keeps TF: transforms are looked up by stamp, and those after the gap are
the ones the next frames need. Window and map are reset between frames (the node's callbacks
run in other threads than the frame in flight, whose keyframes belong to the old timeline), TF
at once.
"""

from __future__ import annotations

import threading

from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.tf_buffer import TfStore
from kdbts_ros.runtime.accounting import Accounting
from kdbts_ros.runtime.cameras import CameraInput, RigInputs
from kdbts_ros.runtime.mapping import MapStage
from kdbts_ros.runtime.window import FrameWindow

THRESHOLD_NS = 1_000_000_000  # a step back beyond this is a jump, not reordering

BACK = "time went backwards"  # the reason handed to the map stage (a gap forward names its length)


class TimeJumps:
    """Watches image, TF and frame stamps and the clock; resets window, TF and map once per jump.

    ``on_image`` and ``on_tf`` run under the runner's lock (the node's callbacks), ``frame`` in the
    step thread.
    """

    def __init__(
        self,
        cfg: PipelineConfig,
        accounting: Accounting,
        rig: RigInputs,
        window: FrameWindow,
        tf: TfStore,
        mapping: MapStage,
    ):
        self.cfg, self.accounting, self.rig = cfg, accounting, rig
        self.window, self.tf, self.mapping = window, tf, mapping
        self._tf_newest: int | None = None
        self._last_frame: int | None = None
        self._pending: str | None = None  # the reason of a reset of window and map due before the next frame
        self._pending_lock = threading.Lock()  # set in the callbacks' threads, taken in the step thread
        self._stale: set[str] = set()  # clocks that have yet to see a jump already reset for

    # ------------------------------------------------------------ the clocks
    def on_image(self, cam: CameraInput, stamp: int) -> None:
        """An image of ``cam`` arrived (before it is queued)."""
        last = cam.last_stamp_ns
        if last is None or stamp >= last - THRESHOLD_NS:
            return
        self.accounting.fault(
            "time_jump_back",
            f"{cam.image_topic}: stamp went back by {(last - stamp) * 1e-9:.3f} s; window and waiting images cleared",
        )
        self.rig.discard_waiting("time_jump_back", "image from before the time jump")
        for c in self.rig.cameras:
            c.last_stamp_ns = None  # so that the other cameras do not report the same jump again
        self._jumped("images")

    def on_tf(self, stamp: int) -> None:
        """A dynamic transform at ``stamp`` arrived (before it is added)."""
        if self._tf_newest is not None and stamp < self._tf_newest - THRESHOLD_NS:
            self.accounting.fault(
                "tf_time_jump_back",
                f"TF went back by {(self._tf_newest - stamp) * 1e-9:.3f} s; dynamic TF history cleared",
            )
            self._tf_newest = None
            if not self._jumped("tf"):
                self.tf.clear()  # the images reset already: the TF that came since is the old timeline's
        self._tf_newest = stamp if self._tf_newest is None else max(self._tf_newest, stamp)

    @staticmethod
    def clock_went_back(now_ns: int, arrival_ns: int) -> bool:
        """Whether the clock reads more than the threshold before an image's arrival (sim time restarted)."""
        return now_ns < arrival_ns - THRESHOLD_NS

    def frame(self, stamp: int) -> None:
        """A frame at ``stamp`` is about to be processed (step thread, no other frame in flight).

        Window and map are reset first for a jump back seen since the last frame, or for a gap
        beyond ``map.max_time_gap`` since it.
        """
        with self._pending_lock:
            reason, self._pending = self._pending, None
        last = self._last_frame
        gap_s, max_gap_s = (0.0 if last is None else (stamp - last) * 1e-9), self.cfg.map.max_time_gap
        if reason is None and gap_s > max_gap_s:
            reason = f"the stamps jumped {gap_s:.1f} s forward (map.max_time_gap {max_gap_s:g} s)"
        if reason is not None:
            self.window.reset()
            self.mapping.time_jump(reason)
        self._last_frame = stamp

    # ------------------------------------------------------------ the reset
    def _jumped(self, clock: str) -> bool:
        """Time went back on ``clock``: reset, unless another clock has already reset for this jump (False)."""
        if clock in self._stale:
            self._stale.discard(clock)
            return False
        self._stale = {"images", "tf"} - {clock}
        self.tf.clear()
        with self._pending_lock:
            self._pending = BACK
        return True
