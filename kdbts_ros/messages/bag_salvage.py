"""Reading what a bag cut short holds: every complete message up to where the recording ended.

A recorder that lost power or was killed leaves an mcap file without its summary and end
magic (rosbags refuses it: "File end magic is invalid") and no ``metadata.yaml``; an sqlite3
bag is left without ``metadata.yaml``. These readers need neither: mcap records are read in
file order with the ``mcap`` library's stream reader (chunks decompressed and CRC-checked)
until the first record that is cut or corrupt, and a chunk cut in the middle still gives the
messages written whole before the cut; an sqlite3 file gives its committed messages.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from mcap.data_stream import ReadDataStream
from mcap.exceptions import EndOfFile, InvalidMagic, McapError
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, DataEnd, Footer, Message, Schema
from mcap.stream_reader import StreamReader, breakup_chunk

from kdbts_ros.core.errors import UserError

# (stamp ns, topic, msgtype, serialized data)
BagMessage = tuple[int, str, str, bytes]


class BagError(UserError, ValueError):
    """A bag that cannot be read at all; the message names it and says why."""


@dataclass
class Extent:
    """How much of a storage file could be read, and why reading stopped before its end (None: it did not)."""

    messages: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    stopped: str | None = None

    def add(self, stamp: int) -> None:
        self.messages += 1
        self.first_ns = stamp if self.first_ns is None else min(self.first_ns, stamp)
        self.last_ns = stamp if self.last_ns is None else max(self.last_ns, stamp)

    @property
    def seconds(self) -> float:
        return 0.0 if self.first_ns is None or self.last_ns is None else (self.last_ns - self.first_ns) * 1e-9


class _ExactReads:
    """A file whose short reads raise EndOfFile: mcap's reader takes a short read as the whole record.

    It has only ``read``, all mcap's readers call: they are handed it as an ``IO[bytes]`` (a cast).
    """

    def __init__(self, f: io.BufferedIOBase):
        self.f = f

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) < n:
            raise EndOfFile()
        return data


_NOT_MCAP = "not a readable mcap file"
# what a cut or corrupt record raises inside the mcap reader (struct errors are ValueErrors)
_RECORD_ERRORS = (EndOfFile, McapError, ValueError, KeyError, IndexError, UnicodeDecodeError, OverflowError)


class McapSalvage:
    """The complete messages of an mcap file, however it ends; ``extent`` is filled by each pass."""

    def __init__(self, path: Path):
        self.path = path
        self.topics: dict[str, str] = {}
        self.extent = Extent()
        # a first pass finds the topics and how much is readable before anything is processed
        for _ in self.messages():
            pass
        if self.extent.stopped and self.extent.stopped.startswith(_NOT_MCAP):
            raise BagError(f"{path}: {self.extent.stopped}")

    def messages(self) -> Iterator[BagMessage]:
        """Messages in file order (within a chunk in time order), up to the first cut or corrupt record."""
        self.extent = Extent()
        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}

        def handle(records: list) -> Iterator[BagMessage]:
            # a chunk's messages in time order, as an indexed reader yields them
            for r in sorted(records, key=lambda r: r.log_time if isinstance(r, Message) else -1):
                if isinstance(r, Schema):
                    schemas[r.id] = r.name
                elif isinstance(r, Channel):
                    if r.message_encoding == "cdr" and r.schema_id in schemas:
                        channels[r.id] = (r.topic, schemas[r.schema_id])
                        self.topics[r.topic] = schemas[r.schema_id]
                elif isinstance(r, Message) and r.channel_id in channels:
                    self.extent.add(r.log_time)
                    yield (r.log_time, *channels[r.channel_id], r.data)

        with open(self.path, "rb") as f:
            reader = StreamReader(cast(IO[bytes], _ExactReads(f)), emit_chunks=True, validate_crcs=False)
            record_start = 0
            try:
                for record in reader.records:
                    if isinstance(record, Chunk):
                        yield from handle(breakup_chunk(record, validate_crc=True))
                    elif isinstance(record, (DataEnd, Footer)):
                        return  # the data section ended cleanly: only the summary or the footer was bad
                    else:
                        yield from handle([record])
                    record_start = f.tell()
            except InvalidMagic:
                self.extent.stopped = f"{_NOT_MCAP} (it does not start with the mcap magic)"
            except _RECORD_ERRORS as exc:
                cut = isinstance(exc, EndOfFile)
                if record_start == 0:
                    self.extent.stopped = f"{_NOT_MCAP} (its header is {'cut' if cut else 'corrupt'})"
                    return
                f.seek(record_start)
                kind = _record_name(f.read(1))
                size = self.path.stat().st_size
                if cut and record_start == size:
                    self.extent.stopped = f"the file ends after {size} bytes, between two records"
                elif cut:
                    self.extent.stopped = (
                        f"its {kind} record at byte {record_start} runs past the end of the file ({size} bytes)"
                    )
                else:
                    self.extent.stopped = f"corrupt {kind} record at byte {record_start} ({type(exc).__name__}: {exc})"
                if cut:
                    yield from handle(_cut_chunk_records(f, record_start))

    def close(self) -> None:
        """Nothing is held open between passes."""


def _record_name(opcode: bytes) -> str:
    """'chunk', 'message', ... of an mcap opcode byte."""
    try:
        return Opcode(opcode[0]).name.lower().replace("_", " ")
    except (IndexError, ValueError):
        return "unknown"


def _cut_chunk_records(f: io.BufferedIOBase, start: int) -> list:
    """Schemas, channels and messages written whole in a chunk cut short at the end of the file."""
    f.seek(start)
    stream = ReadDataStream(cast(IO[bytes], _ExactReads(f)))
    records: list = []
    try:
        if stream.read1() != Opcode.CHUNK:
            return records
        stream.read(8 + 8 + 8 + 8 + 4)  # record length (more than is left), start and end time, size, crc
        compression = stream.read_prefixed_string()
        stream.read8()  # compressed size
        data = _decompress_prefix(f.read(), compression)
        inner = StreamReader(cast(IO[bytes], _ExactReads(io.BytesIO(data))), skip_magic=True)
        for record in inner.records:
            records.append(record)
    except _RECORD_ERRORS:
        pass  # the cut: everything before it is kept
    return records


def _decompress_prefix(data: bytes, compression: str) -> bytes:
    """As much of a cut compressed chunk as decompresses."""
    if compression == "":
        return data
    try:
        if compression == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        if compression == "lz4":
            import lz4.frame

            return lz4.frame.LZ4FrameDecompressor().decompress(data)
    except Exception:  # a cut frame that yields nothing: the chunk is lost, not the bag
        return b""
    return b""


class Sqlite3Salvage:
    """The committed messages of a rosbag2 sqlite3 file, without ``metadata.yaml``."""

    def __init__(self, path: Path):
        self.path = path
        self.extent = Extent()
        try:
            # read-write, so that SQLite rolls back a transaction the recorder left half written
            self.db = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
            self.topics = {name: msgtype for _, name, msgtype in self._topic_rows()}
            count, first, last = self.db.execute(
                "SELECT COUNT(*), MIN(timestamp), MAX(timestamp) FROM messages"
            ).fetchone()
        except sqlite3.Error as exc:
            raise BagError(f"{path}: not a readable rosbag2 sqlite3 file ({exc})") from exc
        self.extent = Extent(count, first, last)

    def _topic_rows(self) -> list[tuple[int, str, str]]:
        return self.db.execute("SELECT id, name, type FROM topics").fetchall()

    def messages(self) -> Iterator[BagMessage]:
        """Messages in time order."""
        topics = {tid: (name, msgtype) for tid, name, msgtype in self._topic_rows()}
        rows = self.db.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY timestamp, id")
        try:
            for topic_id, stamp, data in rows:
                if topic_id in topics:
                    yield (stamp, *topics[topic_id], bytes(data))
        except sqlite3.DatabaseError as exc:
            raise BagError(f"{self.path}: corrupt after the messages read so far ({exc})") from exc

    def close(self) -> None:
        self.db.close()
