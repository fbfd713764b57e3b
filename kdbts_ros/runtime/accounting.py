"""Inputs lost and faults worked around, counted by reason and logged throttled, so nothing is lost silently."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import numpy as np

log = logging.getLogger("kdbts_ros")
LOG_PERIOD_S = 5.0  # a repeated warning is logged at most this often per reason


class Throttle:
    """Log a repeated warning at most once per period and reason, with its running count."""

    def __init__(self, period_s: float = LOG_PERIOD_S):
        self.period_s = period_s
        self.last: dict[str, float] = {}

    def warn(self, reason: str, count: int, message: str) -> None:
        now = time.monotonic()
        if now - self.last.get(reason, -np.inf) >= self.period_s:
            self.last[reason] = now
            log.warning("%s (%s: %d so far)", message, reason, count)


class Accounting:
    """The drop and fault counters; they change only under ``lock`` (the runner's, shared with its queues)."""

    def __init__(self, lock: threading.RLock):
        self.lock = lock
        self.drops: Counter[str] = Counter()  # inputs lost, by reason
        self.faults: Counter[str] = Counter()  # problems worked around, nothing lost
        self._reported: Counter[str] = Counter()
        self._throttle = Throttle()

    def drop(self, reason: str, message: str, camera_drops: Counter[str] | None = None) -> None:
        """Count a lost input (and, for a received image, in its camera's ``camera_drops``) and log it, throttled."""
        with self.lock:
            self.drops[reason] += 1
            count = self.drops[reason]
            if camera_drops is not None:
                camera_drops[reason] += 1
        self._throttle.warn(reason, count, f"dropped: {message}")

    def fault(self, reason: str, message: str) -> None:
        """Count a problem worked around and log it, throttled."""
        with self.lock:
            self.faults[reason] += 1
            count = self.faults[reason]
        self._throttle.warn(reason, count, message)

    def report(self) -> tuple[Counter[str], dict[str, int]]:
        """Every count as ``dropped_<reason>`` and ``fault_<reason>``, and those that grew since the last report."""
        with self.lock:  # a new reason added while iterating would raise
            counts = Counter({f"dropped_{k}": v for k, v in self.drops.items()})
            counts.update({f"fault_{k}": v for k, v in self.faults.items()})
        new = {k: v - self._reported[k] for k, v in counts.items() if v > self._reported[k]}
        self._reported = counts
        return counts, new
