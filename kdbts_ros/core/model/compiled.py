"""Loop nests that ``torch.compile`` builds on first use, with torch's operators as the fallback.

A few products of the fast path are memory-bound as torch's operators run them (each writes a
large intermediate that the next reads back), and no library offers them fused. ``torch.compile``
turns each into one loop nest (C++ with OpenMP on a CPU, Triton on CUDA). Building takes seconds
the first time in a process (then torch's on-disk cache) and needs a C++ compiler with Python's
headers on a CPU; when it fails, :attr:`Compiled.problem` says why, calls return None and the
caller runs torch's operators; :func:`problems` collects the reasons for the node's faults, those
of every :class:`LoopNest` (``native_march`` builds one with the C compiler).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

_BUILT: weakref.WeakSet[LoopNest] = weakref.WeakSet()


class LoopNest:
    """A loop nest built on first use: :attr:`problem` says why it could not be (then calls return None)."""

    def __init__(self) -> None:
        self.problem: str | None = None
        _BUILT.add(self)


class Compiled(LoopNest):
    """``fn`` through ``torch.compile``, built on its first call: with dynamic shapes (no rebuild when sizes
    change) unless ``compile_kwargs`` (torch.compile's keywords) say otherwise."""

    def __init__(self, fn: Callable[..., Any], **compile_kwargs: Any) -> None:
        super().__init__()
        self._fn = torch.compile(fn, **{"dynamic": True, **compile_kwargs})

    def __call__(self, *args: torch.Tensor) -> Any:
        """``fn(*args)``, or None when the loop nest could not be built (then never tried again)."""
        if self.problem is not None:
            return None
        try:
            # one grad mode and no autograd history: the callers infer, and a build per grad mode would be wasted
            with torch.no_grad():
                return self._fn(*(a.detach() for a in args))
        except torch.cuda.OutOfMemoryError:
            raise  # the frame's problem, not the build's: the runner skips it and halves the query chunks
        except Exception as exc:  # compilers fail in many ways (missing tools or headers, no memory)
            self.problem = build_problem(exc)
            return None


def build_problem(exc: Exception) -> str:
    """A failed build's reason in one line: the exception's type and first line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def problems() -> list[str]:
    """Why loop nests of this process could not be built (empty when all that were asked for were)."""
    return sorted({c.problem for c in _BUILT if c.problem is not None})
