"""Reading a ROS 2 bag (a rosbag2 folder, or one .mcap / .db3 file), complete or cut short.

A complete bag is read with rosbags (indexed, in time order). When rosbags refuses it (an
mcap without summary or end magic, no ``metadata.yaml``, a summary cut in half), the
storage files are read with :mod:`kdbts_ros.messages.bag_salvage` up to their last complete
message, and :attr:`OpenBag.cut_short` says how much was read. What cannot be read at all
raises :class:`BagError` naming the bag.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from rosbags.rosbag2 import Reader

from kdbts_ros.messages.bag_salvage import BagError, BagMessage, McapSalvage, Sqlite3Salvage

__all__ = ["BagError", "BagMessage", "OpenBag", "open_bag"]
STORAGE_SUFFIXES = (".mcap", ".db3")


class OpenBag:
    """Topics, message count and messages of a bag; ``cut_short`` is None for a complete one."""

    path: Path
    topics: dict[str, str]  # topic -> message type
    message_count: int

    @property
    def cut_short(self) -> str | None:
        """What was wrong and how much was read; None for a complete bag."""
        return None

    def messages(self) -> Iterator[BagMessage]:
        """(stamp ns, topic, msgtype, data) of every message."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the files."""


class _Complete(OpenBag):
    def __init__(self, path: Path, reader: Reader):
        self.path, self.reader = path, reader
        self.topics = {c.topic: c.msgtype for c in reader.connections}
        self.message_count = reader.message_count

    def messages(self) -> Iterator[BagMessage]:
        read = 0
        try:
            for conn, stamp, data in self.reader.messages():
                yield stamp, conn.topic, conn.msgtype, bytes(data)
                read += 1
        except Exception as exc:  # rosbags parsing foreign bytes: any failure is the file's
            raise BagError(
                f"{self.path}: unreadable after {read} of {self.message_count} messages ({type(exc).__name__}: {exc})"
            ) from exc

    def close(self) -> None:
        self.reader.close()


class _Salvaged(OpenBag):
    def __init__(self, path: Path, why: str):
        self.path, self.why = path, why
        self.parts = []
        try:
            for f in _storage_files(path):
                self.parts.append(McapSalvage(f) if f.suffix == ".mcap" else Sqlite3Salvage(f))
        except BaseException:
            self.close()
            raise
        self.topics = {t: m for part in self.parts for t, m in part.topics.items()}
        self.message_count = sum(part.extent.messages for part in self.parts)

    @property
    def cut_short(self) -> str:
        """What was wrong and how much was read (final once the messages were read)."""
        first = [p.extent.first_ns for p in self.parts if p.extent.first_ns is not None]
        last = [p.extent.last_ns for p in self.parts if p.extent.last_ns is not None]
        seconds = (max(last) - min(first)) * 1e-9 if first else 0.0
        read = sum(p.extent.messages for p in self.parts)
        where = "; ".join(f"{p.path.name}: {p.extent.stopped}" for p in self.parts if p.extent.stopped)
        if not where:  # every storage file read to its end: only the index or metadata.yaml was missing
            return f"{self.path}: incomplete ({self.why}); read all {read} messages, {seconds:.2f} s of recording"
        return (
            f"{self.path}: cut short ({self.why}); read {read} messages, {seconds:.2f} s of recording, "
            f"up to the last complete one ({where})"
        )

    def messages(self) -> Iterator[BagMessage]:
        for part in self.parts:
            yield from part.messages()

    def close(self) -> None:
        for part in self.parts:
            part.close()


@contextmanager
def open_bag(path: str | Path) -> Iterator[OpenBag]:
    """The bag at ``path``; salvaged when rosbags cannot read it whole. Raises BagError or OSError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    try:
        reader = Reader(path)
        reader.open()
        bag: OpenBag = _Complete(path, reader)
    except Exception as exc:  # rosbags refusing the bag is the cue to salvage it
        bag = _Salvaged(path, _why(path, exc))
    try:
        yield bag
    finally:
        bag.close()


def _why(path: Path, exc: Exception) -> str:
    """Why rosbags refused a bag, without the path the warning names anyway."""
    if path.is_dir() and not (path / "metadata.yaml").exists():
        return "no metadata.yaml"
    text = str(exc).replace(f"'{path}'", "").replace(str(path), "")
    return " ".join(text.split()).rstrip(".") or type(exc).__name__


def _storage_files(path: Path) -> list[Path]:
    """The .mcap / .db3 files of a bag: those metadata.yaml lists when it can, else those in the folder."""
    if path.is_file():
        if path.suffix not in STORAGE_SUFFIXES:
            raise BagError(f"{path}: not a ROS 2 bag (expected a bag folder, an .mcap or a .db3 file)")
        return [path]
    listed = _listed_files(path)
    if listed and all(f.is_file() for f in listed):
        return listed
    found = sorted((f for f in path.iterdir() if f.suffix in STORAGE_SUFFIXES and f.is_file()), key=_natural)
    if not found:
        raise BagError(f"{path}: not a ROS 2 bag (no readable metadata.yaml, no .mcap or .db3 file in it)")
    return found


def _listed_files(folder: Path) -> list[Path]:
    """Storage files named by metadata.yaml, in recording order; [] when it is missing or unreadable."""
    try:
        info = yaml.safe_load((folder / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return [folder / Path(str(name)).name for name in info["relative_file_paths"]]
    except Exception:  # any defect of the metadata means: look at the files themselves
        return []


def _natural(path: Path) -> list:
    """Sort key: bag_2.mcap before bag_10.mcap, as rosbag2 numbers split files."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]
