"""Measures shared by the benchmarks: duration percentiles, process memory, the machine in one line."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def memory_mb(field: str = "VmHWM") -> float | None:
    """A memory figure of this process from /proc/self/status, MiB: VmHWM the peak, VmRSS the current resident set."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def percentiles_ms(seconds: Sequence[float] | np.ndarray, qs: tuple[int, ...] = (50, 99)) -> dict[str, float]:
    """Percentiles of durations in milliseconds, keyed median_ms, p<q>_ms and max_ms."""
    a = np.asarray(seconds) * 1e3
    names = {50: "median_ms", 100: "max_ms"}
    return {names.get(q, f"p{q}_ms"): float(np.percentile(a, q)) for q in qs}


def machine() -> str:
    """CPU, threads, GPU and torch version in one line."""
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{platform.processor() or platform.machine()} x {torch.get_num_threads()} threads{gpu}, "
        f"torch {torch.__version__}"
    )
