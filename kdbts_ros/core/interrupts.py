"""Ctrl-C and SIGTERM as an exception, so that ``finally`` blocks close the files being written.

Python turns SIGINT into KeyboardInterrupt but lets SIGTERM (``kill``, a container stopping)
end the process on the spot, leaving a bag without its index. :func:`signals_as_exceptions`
raises :class:`Interrupted` for both; :func:`deferred` holds a signal back until a record is
written whole, so that an interrupted writer can still close its file consistently.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class _Deferral(threading.local):
    depth = 0
    pending: int | None = None


_deferral = _Deferral()  # handlers run on the main thread, so they see the main thread's state


def _raise(signum: int, _frame: object) -> None:
    if _deferral.depth:
        _deferral.pending = signum
        return
    raise Interrupted(signum)


@contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Within the block (main thread only), SIGINT and SIGTERM raise :class:`Interrupted`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """A signal arriving within the block is raised when the block ends (blocks nest)."""
    _deferral.depth += 1
    try:
        yield
    finally:
        _deferral.depth -= 1
        if not _deferral.depth and _deferral.pending is not None:
            signum, _deferral.pending = _deferral.pending, None
            raise Interrupted(signum)
