"""Recordings cut short: every piece of a cut bag replays up to its last complete message, and
writers interrupted by Ctrl-C, SIGTERM or SIGKILL leave a bag that reads back up to the interruption."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import small_config, write_odometry
from rosbags.rosbag2 import Reader

from kdbts_ros.data.bags import BagWriter
from kdbts_ros.data.datasets import conventions, load_recording
from kdbts_ros.data.kitti_bag import recording_messages
from kdbts_ros.data.sequences import input_messages, synthetic_sample
from kdbts_ros.messages.bag_reader import BagError, open_bag
from kdbts_ros.messages.topics import qualified
from kdbts_ros.runtime.replay import replay

pytestmark = pytest.mark.integration

FRAMES = 6
IMAGE = qualified(small_config().topics.images[0])  # as the bag holds it


def _record(path: Path, storage: str = "mcap") -> list[tuple[int, str, str, bytes]]:
    """A short posed camera stream (tf, camera_info, image per frame) written as a bag; returns its messages."""
    cfg = small_config()
    messages = input_messages(synthetic_sample(FRAMES, width=192, height=64), cfg.fixed_frame, cfg.topics)
    with BagWriter(path, storage) as bag:
        for stamp, topic, msgtype, data in messages:
            bag.write(topic, msgtype, stamp, data)
    return messages


def _read(path: Path) -> tuple[list, str | None]:
    with open_bag(path) as bag:
        return list(bag.messages()), bag.cut_short


def _cut(bag: Path, to: Path, size: int, keep_metadata: bool) -> Path:
    """A copy of the bag folder with its mcap cut after ``size`` bytes, as a recording that lost power."""
    to.mkdir()
    (mcap,) = bag.glob("*.mcap")
    (to / mcap.name).write_bytes(mcap.read_bytes()[:size])
    if keep_metadata:
        (to / "metadata.yaml").write_bytes((bag / "metadata.yaml").read_bytes())
    return to


@pytest.mark.parametrize("chunks", ["one chunk", "a chunk per message"])
def test_a_bag_cut_anywhere_replays_up_to_its_last_complete_message(tmp_path, monkeypatch, chunks):
    if chunks == "a chunk per message":  # every write makes the chunk so far durable
        monkeypatch.setattr(BagWriter, "DURABLE_EVERY_S", -1.0)
    full = tmp_path / "full"
    written = _record(full)
    data = next(full.glob("*.mcap")).read_bytes()
    # a message is complete when its record, which ends with its data, lies before the cut
    ends = [data.index(payload) + len(payload) for *_, payload in written]
    assert ends == sorted(ends)
    header_end = 8 + 9 + int.from_bytes(data[9:17], "little")
    cuts = sorted({header_end - 5, header_end, *(len(data) * k // 7 for k in range(1, 7)), len(data) - 1})
    read_before = -1
    for i, cut in enumerate(cuts):
        piece = _cut(full, tmp_path / f"piece_{cut}", cut, keep_metadata=i % 2 == 0)
        complete = sum(end <= cut for end in ends)
        if cut < header_end:
            with pytest.raises(BagError, match="header is cut"):
                _read(piece)
            continue
        read, note = _read(piece)
        assert [m[:3] for m in read] == [m[:3] for m in written[:complete]], cut
        assert [m[3] for m in read] == [m[3] for m in written[:complete]]
        assert f" {complete} messages" in note and ("cut short" in note or complete == len(written))
        assert complete >= read_before
        read_before = complete
        images = sum(t == IMAGE for _, t, _, _ in read)
        if not complete:
            with pytest.raises(BagError, match="nothing to replay"):
                replay(small_config(), piece, tmp_path / f"out_{cut}", progress=False)
            continue
        result = replay(small_config(), piece, tmp_path / f"out_{cut}", progress=False)
        assert result.processed == images and result.cut_short == note
        with Reader(tmp_path / f"out_{cut}") as out:  # the replay's own output is complete
            topics = [c.topic for c, _, _ in out.messages()]
        assert topics.count(IMAGE) == images and topics.count("/kdbts/depth/image") == images
    assert read_before == len(written)  # only the end of the file cut: every message read


def test_an_sqlite3_bag_without_metadata_replays_whole(tmp_path):
    written = _record(tmp_path / "bag", "sqlite3")
    (tmp_path / "bag" / "metadata.yaml").unlink()
    read, note = _read(tmp_path / "bag")
    assert [m[:3] for m in read] == [m[:3] for m in written]
    assert "no metadata.yaml" in note and f"read all {len(written)} messages" in note
    result = replay(small_config(), tmp_path / "bag", tmp_path / "out", progress=False)
    assert result.processed == FRAMES


# A writer slowed down (as by a slow disk or a long conversion), so that a signal lands mid-write.
SLOW_KDBTS = """
import sys, time
from kdbts_ros.data.bags import BagWriter
write = BagWriter.write
BagWriter.write = lambda self, *args: (write(self, *args), time.sleep(0.02))[0]
BagWriter.DURABLE_EVERY_S = 0.2
from kdbts_ros.commands.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _interrupted(argv: list[str], out: Path, sig: signal.Signals) -> subprocess.CompletedProcess:
    """Run kdbts, send ``sig`` a while after it started writing ``out``, and wait for it to end."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_KDBTS, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # a few durable points into the writing
    assert proc.poll() is None, f"kdbts ended before the signal: {proc.communicate()}"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_kitti2bag_leaves_a_bag_readable_up_to_the_interruption(tmp_path, storage, sig):
    seq, _ = write_odometry(tmp_path / "odom", n=25)  # 275 messages, 5.5 s slowed down
    full = list(recording_messages(load_recording("odometry", seq, None, None, None, None), conventions("odometry")))
    out = tmp_path / "bag"
    done = _interrupted(["kitti2bag", "odometry", str(seq), str(out), "--storage", storage], out, sig)
    if sig == signal.SIGKILL:
        assert done.returncode == -sig
        read, note = _read(out)  # no metadata.yaml, the mcap without its summary: salvaged
        assert note and "(no metadata.yaml)" in note
    else:
        assert done.returncode == 128 + sig, done.stderr
        assert done.stderr.strip() == f"kdbts kitti2bag: interrupted ({sig.name})"
        read, note = _read(out)
        assert note is None  # closed with its index and metadata.yaml: rosbags reads it whole
    assert 0 < len(read) < len(full)
    assert [m[:3] for m in read] == [m[:3] for m in full[: len(read)]]
    assert [m[3] for m in read] == [m[3] for m in full[: len(read)]]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_replay_leaves_its_output_readable(tmp_path, sig):
    cfg = small_config()
    messages = input_messages(synthetic_sample(40, width=192, height=64), cfg.fixed_frame, cfg.topics)
    with BagWriter(tmp_path / "in") as bag:
        for stamp, topic, msgtype, data in messages:
            bag.write(topic, msgtype, stamp, data)
    config = tmp_path / "small.yaml"
    config.write_text(
        "model: {checkpoint: random, backbone: resnet18, image_height: 64, image_width: 192}\n"
        "grid: {resolution: 0.5}\nrender: {depth_scale: 0.5, samples: 32}\n"
    )
    out = tmp_path / "out"
    done = _interrupted(["replay", str(tmp_path / "in"), str(out), "--config", str(config)], out, sig)
    assert done.returncode == 128 + sig and done.stderr.strip() == f"kdbts replay: interrupted ({sig.name})"
    with Reader(out) as reader:  # complete: its summary and metadata.yaml were written on the way out
        topics = [c.topic for c, _, _ in reader.messages()]
    assert 0 < topics.count(IMAGE) < 40
    # every frame whose outputs were written has its input image before them
    assert topics.count("/kdbts/depth/image") <= topics.count(IMAGE)


def test_kdbts_replay_of_a_cut_bag_warns_in_one_line(tmp_path, capsys):
    from kdbts_ros.commands.cli import main

    written = _record(tmp_path / "full")
    data = next((tmp_path / "full").glob("*.mcap")).read_bytes()
    first_image = next(i for i, m in enumerate(written) if m[1] == IMAGE)
    config = tmp_path / "small.yaml"
    config.write_text("model: {checkpoint: random, backbone: resnet18, image_height: 64, image_width: 192}\n")
    # cut inside the first image: its tf and camera_info are read, no frame can be processed
    before_image = _cut(tmp_path / "full", tmp_path / "a", data.index(written[first_image][3]) + 10, True)
    assert main(["replay", str(before_image), str(tmp_path / "out_a"), "--config", str(config)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"kdbts replay: {before_image}: cut short") and line.endswith("no frame was processed")
    assert f"read {first_image} messages" in line
    # cut in the middle: a warning, and the frames before the cut are processed
    middle = _cut(tmp_path / "full", tmp_path / "b", len(data) // 2, False)
    assert main(["replay", str(middle), str(tmp_path / "out_b"), "--config", str(config)]) == 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"kdbts replay: warning: {middle}: cut short (no metadata.yaml)")
