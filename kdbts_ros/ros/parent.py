"""Tie a process's life to its parent's, so a node started by a launch never outlives it."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def exit_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGINT) -> bool:
    """Have the kernel send ``sig`` to this process when ``parent_pid`` (its parent) ends; False off Linux.

    A launch that is killed (SIGKILL, a crash) cannot stop its children itself. SIGINT lets
    the node shut down as on Ctrl-C. ``parent_pid`` is the parent read early at start-up: if it
    is already gone (this process was re-parented before the request), the signal is sent now.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
    return True
