"""Paths as the written reports show them: no machine's folders, so a report reads the same from any checkout."""

from __future__ import annotations

import os
from pathlib import Path


def report_path(path: str | os.PathLike[str]) -> str:
    """``path`` for a report: relative to the working directory inside it, ``~/...`` under home, else its name.

    A relative path, or a text that is no path at all (``random (seed 0)``, a weights name),
    is returned as it is.
    """
    p = Path(path)
    if not p.is_absolute():
        return str(path)
    for base, shown in ((Path.cwd(), None), (Path.home(), Path("~"))):
        if p.is_relative_to(base) and p != base:
            rel = p.relative_to(base)
            return str(rel if shown is None else shown / rel)
    return p.name
