"""Reading a bag: ROS 2 (a rosbag2 folder, or one .mcap / .db3 file), complete or cut short, or ROS 1 (.bag).

A ROS 1 bag (``#ROSBAG V2.0``, as ``rosbag record`` and the ``kitti2bag`` tool write it) is read
with rosbags' rosbag1 reader and each message converted to the CDR bytes of its ROS 2 type
(:meth:`Typestore.ros1_to_cdr`: std_msgs/Header loses its ``seq``; CameraInfo's ``D K R P`` are
its ``d k r p``; type names are ROS 2's, ``sensor_msgs/msg/Image``). A message of a type the
typestore does not know keeps its ROS 1 bytes (the replay leaves such types out, counted).
A complete ROS 2 bag is read with rosbags (indexed, in time order). When rosbags refuses it (an
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
from rosbags.rosbag1 import Reader as Ros1Reader
from rosbags.rosbag2 import Reader

from kdbts_ros.messages import cdr
from kdbts_ros.messages.bag_salvage import BagError, BagMessage, McapSalvage, Sqlite3Salvage

__all__ = ["BagError", "BagMessage", "OpenBag", "open_bag"]
STORAGE_SUFFIXES = (".mcap", ".db3")
ROS1_SUFFIX = ".bag"
ROS1_MAGIC = b"#ROSBAG V2.0\n"


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


class _Ros1(OpenBag):
    """A ROS 1 bag, its messages as the CDR bytes of their ROS 2 types."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            if f.read(len(ROS1_MAGIC)) != ROS1_MAGIC:
                raise BagError(f"{path}: not a ROS 1 bag (it does not start with {ROS1_MAGIC.strip().decode()})")
        self.reader = Ros1Reader(path)
        try:
            self.reader.open()
        except Exception as exc:  # rosbags' ReaderError, or struct / OS errors on a garbled file
            raise BagError(f"{path}: not a readable ROS 1 bag ({_ros1_why(exc)})") from exc
        self.topics = {c.topic: c.msgtype for c in self.reader.connections}
        self.message_count = self.reader.message_count

    def messages(self) -> Iterator[BagMessage]:
        known = cdr.typestore().types
        read = 0
        try:
            for conn, stamp, raw in self.reader.messages():
                data = bytes(cdr.typestore().ros1_to_cdr(raw, conn.msgtype)) if conn.msgtype in known else bytes(raw)
                yield stamp, conn.topic, conn.msgtype, data
                read += 1
        except Exception as exc:  # a corrupt chunk, or a message that does not convert: the file's
            raise BagError(
                f"{self.path}: unreadable after {read} of {self.message_count} messages ({_ros1_why(exc)})"
            ) from exc

    def close(self) -> None:
        self.reader.close()


def _ros1_why(exc: Exception) -> str:
    """rosbags' reason, with the advice a ROS 1 user knows for a bag whose recording was cut."""
    text = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    if "not indexed" in text:
        return f"{text}: the recording was cut short; `rosbag reindex` it first"
    return text


def _is_ros1(path: Path) -> bool:
    """A .bag file, or any file that starts with the ROS 1 bag magic."""
    if not path.is_file():
        return False
    if path.suffix == ROS1_SUFFIX:
        return True
    with open(path, "rb") as f:
        return f.read(len(ROS1_MAGIC)) == ROS1_MAGIC


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
    """The bag at ``path`` (ROS 2, or ROS 1 by its magic or .bag suffix); a ROS 2 bag is salvaged when rosbags
    cannot read it whole. Raises BagError or OSError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    if _is_ros1(path):
        ros1 = _Ros1(path)
        try:
            yield ros1
        finally:
            ros1.close()
        return
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
            raise BagError(
                f"{path}: not a bag (expected a ROS 2 bag folder, an .mcap or .db3 file, or a ROS 1 .bag file)"
            )
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
