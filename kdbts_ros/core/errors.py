"""Failures a user can cause, and the one line and exit code the command line reports for each.

Loaders raise a :class:`UserError` (``CheckpointError``, ``DatasetError``, ``ConfigError``,
``BagError`` derive from it) whose message names the file and what is wrong. OSErrors
(missing, unreadable, full disk) and interruptions need no wrapping: they carry the file
name or the signal. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import signal
from dataclasses import dataclass

EXIT_USER = 2  # missing, unreadable, corrupt or hostile input; a setting out of range; a wrong folder
EXIT_NO_SPACE = 3  # a write failed because the device (or the quota) is full
# interrupted by a signal: 128 + its number (130 for Ctrl-C, 143 for SIGTERM), as shells report it
DEBUG_ENV = "KDBTS_DEBUG"


class UserError(Exception):
    """A failure the user can fix; the message names the file (or setting) and what is wrong with it."""


@dataclass(frozen=True)
class Failure:
    """What to tell the user about an exception: one line (without the program name) and the exit code."""

    line: str
    code: int


def os_error_text(exc: OSError) -> str:
    """'<file>: <what>' of an OSError, e.g. 'out/bag/bag.mcap: no space left on device'."""
    what = exc.strerror or str(exc) or type(exc).__name__
    what = what[:1].lower() + what[1:]
    if exc.filename is None:
        return what
    return f"{exc.filename}: {what}" + (f" (and {exc.filename2})" if exc.filename2 else "")


def no_space(exc: BaseException | None) -> bool:
    """Whether an exception (or one it was raised from) says the device or quota is full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def classify(exc: BaseException) -> Failure | None:
    """The line and exit code for a failure the user caused or asked for; None for a bug (or SystemExit)."""
    if isinstance(exc, KeyboardInterrupt):
        signum = getattr(exc, "signum", signal.SIGINT)
        return Failure(f"interrupted ({signal.Signals(signum).name})", 128 + signum)
    if isinstance(exc, UserError):
        return Failure(" ".join(str(exc).split()), EXIT_NO_SPACE if no_space(exc) else EXIT_USER)
    if isinstance(exc, OSError):
        return Failure(" ".join(os_error_text(exc).split()), EXIT_NO_SPACE if no_space(exc) else EXIT_USER)
    if isinstance(exc, MemoryError):  # e.g. a hostile file asking for a huge allocation, or a grid too big
        return Failure("out of memory", EXIT_USER)
    return None
