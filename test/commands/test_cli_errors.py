"""Corrupt inputs thrown at every `kdbts` sub-command: one line on stderr naming the file, a non-zero exit.

Every file a command reads is replaced by broken versions of itself (truncated, empty, random
bytes, another format, a hostile payload, malformed YAML, a folder, nothing at all); the
command must answer ``kdbts <command>: <file>: <what>`` and exit with EXIT_USER, never a
traceback and never by running what a hostile file carries.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import SMALL_ARCH, official_checkpoint, slab_model, write_odometry
from rosbags.rosbag2 import storage_mcap, storage_sqlite3

from kdbts_ros.commands.cli import main
from kdbts_ros.core.errors import EXIT_NO_SPACE, EXIT_USER
from kdbts_ros.core.model.checkpoint import FORMAT, random_model, save_checkpoint
from kdbts_ros.data.bags import BagWriter, Ros1BagWriter
from kdbts_ros.data.rig import RigConfig
from kdbts_ros.data.synth_folder import write_sequence

pytestmark = pytest.mark.integration


SMALL = "model: {backbone: resnet18, image_height: 64, image_width: 192}\n"


class _Payload:
    """Unpickling this runs code: it must never happen."""

    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['KDBTS_PWNED'], 'w').write('pwned')",))


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """One valid file of every kind a command reads."""
    d = tmp_path_factory.mktemp("good")
    files = {
        "yaml": d / "c.yaml",
        "safetensors": d / "w.safetensors",
        "pt": d / "official.pt",
        "png": d / "in.png",
        "bag": d / "bag",
    }
    files["yaml"].write_text(SMALL)
    save_checkpoint(files["safetensors"], slab_model(10.0, SMALL_ARCH))
    official_checkpoint(files["pt"], random_model(SMALL_ARCH, seed=1))
    cv2.imwrite(str(files["png"]), np.full((64, 192, 3), 100, np.uint8))
    with BagWriter(files["bag"]) as bag:
        bag.write("/tf_static", "tf2_msgs/msg/TFMessage", 1, b"\x00\x01\x00\x00\x00\x00\x00\x00")
    return files


def _hostile_safetensors(path: Path) -> None:
    """A well-formed safetensors file whose architecture record asks for a billion-channel network."""
    from safetensors.torch import save_file

    arch = (
        '{"backbone": "resnet18", "feature_dim": 1000000000, "sv_hidden": 64, "mv_hidden": 128, '
        '"mv_feature_dim": 16, "z_near": 3.0, "z_far": 80.0}'
    )
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": FORMAT, "architecture": arch})


COMMON = ("random bytes", "a folder", "missing")
VARIANTS = {
    # an empty parameter file is valid (all defaults), and half of one may be too
    "yaml": COMMON
    + ("malformed", "wrong type", "out of range", "unknown key", "not a mapping", "too deep", "hostile tag"),
    "safetensors": COMMON + ("empty", "another format", "truncated", "hostile architecture"),
    "pt": COMMON + ("empty", "another format", "truncated", "hostile pickle", "text", "no tensors", "no encoder"),
    "png": COMMON + ("empty", "another format", "truncated"),
    # a bag argument that is no bag
    "bag": COMMON
    + ("empty", "another format", "truncated", "no storage file", "unknown suffix", "ROS 1 garbage", "ROS 1 cut"),
}


def _variants(kind: str, good: dict[str, Path]) -> dict[str, Callable[[Path], None]]:
    """Ways to break a file of ``kind``: name -> writer of the broken file at a path."""
    data = good[kind].read_bytes() if good[kind].is_file() else b""
    rnd = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    other = {"yaml": good["png"], "safetensors": good["pt"], "pt": good["safetensors"], "png": good["yaml"]}
    out: dict[str, Callable[[Path], None]] = {
        "random bytes": lambda p: p.write_bytes(rnd),
        "a folder": lambda p: p.mkdir(),
        "missing": lambda p: None,
    }
    if kind == "bag":  # named .mcap / .db3, as a user may pass a storage file itself
        return out | {
            "random bytes": lambda p: p.write_bytes(rnd),
            "empty": lambda p: p.write_bytes(b""),
            "another format": lambda p: p.write_bytes(good["safetensors"].read_bytes()),
            "truncated": lambda p: _cut_copy(good["bag"], p, 20),
            "no storage file": lambda p: (p.mkdir(), (p / "metadata.yaml").write_text("x: [\n")),
            "unknown suffix": lambda p: p.write_text("a bag?\n"),
            "ROS 1 garbage": lambda p: p.write_bytes(b"#ROSBAG V2.0\n" + rnd),
            "ROS 1 cut": _cut_ros1,
        }
    if kind != "yaml":
        out["empty"] = lambda p: p.write_bytes(b"")
        out["another format"] = lambda p: p.write_bytes(other[kind].read_bytes())
        out["truncated"] = lambda p: p.write_bytes(data[: len(data) // 2])
    if kind == "yaml":
        out |= {
            "malformed": lambda p: p.write_text("model: {image_height: 64\ngrid: [1, 2\n"),
            "wrong type": lambda p: p.write_text("grid: {resolution: fine}\n"),
            "out of range": lambda p: p.write_text("window_size: 100000\n"),
            "unknown key": lambda p: p.write_text("model: {colour: blue}\n"),
            "not a mapping": lambda p: p.write_text("- model\n- grid\n"),
            "too deep": lambda p: p.write_text("a: {b: {c: {d: {e: {f: 1}}}}}\n"),
            "hostile tag": lambda p: p.write_text("mode: !!python/object/apply:os.system ['touch \"$KDBTS_PWNED\"']\n"),
        }
    if kind == "pt":
        out["hostile pickle"] = lambda p: torch.save({"model": {}, "x": _Payload()}, p)
        out["text"] = lambda p: p.write_text("hello\n")
        out["no tensors"] = lambda p: torch.save({"model": {"a": 1}}, p)
        out["no encoder"] = lambda p: torch.save({"model": {"renderer.net.x": torch.zeros(2)}}, p)
    if kind == "safetensors":
        out["hostile architecture"] = _hostile_safetensors
    assert set(out) == set(VARIANTS[kind])
    return out


def _commands(kind: str, good: dict[str, Path], out: Path) -> dict[str, Callable[[Path], list[str]]]:
    """Every sub-command that reads a file of ``kind``: name -> argv with the file at a path."""
    g = {k: str(v) for k, v in good.items()}
    o = str(out)
    if kind == "yaml":
        return {
            "demo": lambda p: ["demo", "--config", str(p), "--source", "synthetic", "--frames", "1", "--out", o],
            "viz": lambda p: ["viz", g["png"], "--config", str(p), "--out", f"{o}/v.png"],
            "replay": lambda p: ["replay", g["bag"], f"{o}/r", "--config", str(p)],
            "train": lambda p: ["train", "--config", str(p), "--out", o],
            "bench": lambda p: ["bench", "--config", str(p), "--out", o],
            "soak": lambda p: ["soak", "--config", str(p), "--out", o],
        }
    if kind == "safetensors":
        small = ["--config", g["yaml"]]
        return {
            "demo": lambda p: [
                "demo",
                "--checkpoint",
                str(p),
                *small,
                "--source",
                "synthetic",
                "--frames",
                "1",
                "--out",
                o,
            ],
            "viz": lambda p: ["viz", g["png"], "--checkpoint", str(p), *small, "--out", f"{o}/v.png"],
            "eval": lambda p: ["eval", o, "--model", f"X={p}", "--out", o],
            "bench": lambda p: [
                "bench",
                "--networks",
                str(p),
                "--windows",
                "1",
                "--frames",
                "2",
                "--device",
                "cpu",
                "--out",
                o,
            ],
            "soak": lambda p: ["soak", "--network", str(p), "--frames", "20", "--out", o],
            "train": lambda p: ["train", "--out", o, "--set", f"init_checkpoint={p}"],
        }
    if kind == "pt":
        return {"import": lambda p: ["import", str(p), f"{o}/x.safetensors"]}
    if kind == "png":
        return {
            "viz": lambda p: [
                "viz",
                str(p),
                "--checkpoint",
                g["safetensors"],
                "--config",
                g["yaml"],
                "--out",
                f"{o}/v.png",
            ]
        }
    if kind == "bag":
        return {"replay": lambda p: ["replay", str(p), f"{o}/r", "--config", g["yaml"]]}
    raise KeyError(kind)


# a bag variant's file name: the suffix a user would give it
_BAG_SUFFIX = {
    "random bytes": ".mcap",
    "empty": ".db3",
    "another format": ".mcap",
    "unknown suffix": ".txt",
    "ROS 1 garbage": ".bag",
    "ROS 1 cut": ".bag",
}


def _assert_one_line(err: str, command: str, *named: Path | str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"kdbts {command}: ") and "Traceback" not in line, line
    for name in named:
        assert str(name) in line, line
    return line


@pytest.mark.parametrize("kind,variant", [(k, v) for k, names in VARIANTS.items() for v in names])
def test_a_broken_input_file_is_one_line_naming_it_for_every_command(
    good, tmp_path, monkeypatch, capsys, kind, variant
):
    make = _variants(kind, good)[variant]
    marker = tmp_path / "pwned"
    monkeypatch.setenv("KDBTS_PWNED", str(marker))
    out = tmp_path / "out"
    for command, argv in _commands(kind, good, out).items():
        suffix = _BAG_SUFFIX.get(variant, "") if kind == "bag" else f".{kind}"
        broken = tmp_path / f"{command}_{variant.replace(' ', '_')}{suffix}"
        make(broken)
        assert main(argv(broken)) == EXIT_USER, (command, variant)
        _assert_one_line(capsys.readouterr().err, command, broken)
    assert not marker.exists(), "a hostile file ran its payload"
    if kind == "bag":
        assert not (out / "r").exists()  # nothing is written for a bag that cannot be read


def _cut_ros1(to: Path) -> None:
    """A ROS 1 bag of one TF message, cut before its index (a recording killed)."""
    full = to.with_name("full_" + to.name)
    with Ros1BagWriter(full) as bag:
        bag.write("/tf", "tf2_msgs/msg/TFMessage", 1, b"\x00\x01\x00\x00\x00\x00\x00\x00")
    to.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])


def _cut_copy(bag: Path, to: Path, size: int) -> Path:
    """A copy of a bag folder whose mcap keeps only its first ``size`` bytes."""
    to.mkdir()
    for f in bag.iterdir():
        (to / f.name).write_bytes(f.read_bytes()[:size] if f.suffix == ".mcap" else f.read_bytes())
    return to


def test_broken_dataset_folders_name_the_file(tmp_path, capsys):
    # kitti2bag: a calibration file with text where numbers belong, a pose file cut in a line
    seq, _ = write_odometry(tmp_path / "odom")
    calib = seq / "calib.txt"
    calib.write_text(calib.read_text().replace("P0:", "P0: x"))
    assert main(["kitti2bag", "odometry", str(seq), str(tmp_path / "b1")]) == EXIT_USER
    _assert_one_line(capsys.readouterr().err, "kitti2bag", calib)
    seq, _ = write_odometry(tmp_path / "odom2")
    poses = tmp_path / "odom2" / "poses" / "00.txt"
    poses.write_bytes(poses.read_bytes()[:-30])
    assert main(["kitti2bag", "odometry", str(seq), str(tmp_path / "b2")]) == EXIT_USER
    _assert_one_line(capsys.readouterr().err, "kitti2bag", poses)
    assert main(["kitti2bag", "raw", str(tmp_path), str(tmp_path / "b3")]) == EXIT_USER  # not a drive folder
    _assert_one_line(capsys.readouterr().err, "kitti2bag")
    # eval and synth: a rig.json that is not JSON, then one of the wrong shape
    root = tmp_path / "synth"
    write_sequence(root, 0, 1, RigConfig(width=32, height=16))
    ckpt = tmp_path / "w.safetensors"
    save_checkpoint(ckpt, slab_model(10.0, SMALL_ARCH))
    for text in ("{not json", '{"width": "wide"}'):
        (root / "rig.json").write_text(text)
        assert main(["eval", str(root), "--model", str(ckpt), "--out", str(tmp_path / "e")]) == EXIT_USER
        _assert_one_line(capsys.readouterr().err, "eval", root / "rig.json")
        assert main(["synth", str(root), "--frames", "1", "--width", "32", "--height", "16"]) == EXIT_USER
        _assert_one_line(capsys.readouterr().err, "synth", root / "rig.json")
    # an output folder that is a file
    (tmp_path / "a_file").write_text("")
    assert main(["synth", str(tmp_path / "a_file"), "--frames", "1", "--width", "32", "--height", "16"]) == EXIT_USER
    _assert_one_line(capsys.readouterr().err, "synth", tmp_path / "a_file")


def test_wrong_settings_on_the_command_line_are_one_line(good, tmp_path, capsys):
    sv_only = tmp_path / "sv.safetensors"
    model = slab_model(10.0, SMALL_ARCH)
    model.available_heads = ["sv"]
    save_checkpoint(sv_only, model)
    for argv, named in (
        (["train", "--out", str(tmp_path), "--set", "iterations=many"], "iterations"),
        (["train", "--out", str(tmp_path), "--set", "lr"], "--set"),
        (["train", "--out", str(tmp_path), "--set", "lr=[1,"], "--set"),
        (["demo", "--frames", "0", "--out", str(tmp_path)], "--frames"),
        (
            [
                "viz",
                str(good["png"]),
                "--checkpoint",
                str(sv_only),
                "--config",
                str(good["yaml"]),
                "--mode",
                "mv",
                "--out",
                str(tmp_path / "v.png"),
            ],
            sv_only,
        ),
        (
            [
                "viz",
                str(good["png"]),
                "--config",
                str(good["yaml"]),
                "--checkpoint",
                str(good["safetensors"]),
                "--out",
                str(tmp_path / "v.unknown"),
            ],
            "v.unknown",
        ),
    ):
        assert main(argv) == EXIT_USER, argv
        _assert_one_line(capsys.readouterr().err, argv[0], named)


def test_a_damaged_training_state_is_named_with_the_way_out(tmp_path, capsys):
    root = tmp_path / "data"
    for seed in (0, 1):
        write_sequence(root, seed, 4, RigConfig(width=160, height=64))
    out = tmp_path / "run"
    out.mkdir()
    settings = [
        "--set",
        f"data.sources=[synth {root}]",
        "data.side_offset=1",
        "model.feature_dim=8",
        "model.mv_hidden=16",
        "iterations=1",
        "batch_size=1",
        "threads=1",
    ]
    for content in (b"\x80\x02garbage", b""):
        (out / "state.pt").write_bytes(content)
        assert main(["train", "--out", str(out), *settings]) == EXIT_USER
        _assert_one_line(capsys.readouterr().err, "train", out / "state.pt")
    torch.save({"model": {"not": torch.zeros(1)}, "step": 3}, out / "state.pt")  # another run's state
    assert main(["train", "--out", str(out), *settings]) == EXIT_USER
    assert "--restart" in _assert_one_line(capsys.readouterr().err, "train", out / "state.pt")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_full_disk_while_writing_a_bag_names_it_and_has_its_own_exit_code(tmp_path, monkeypatch, capsys, storage):
    seq, _ = write_odometry(tmp_path / "odom")
    if storage == "mcap":

        def full(*_args):  # the storage's file write fails as the OS reports it: without a file name
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(storage_mcap.McapWriter, "write", full)
    else:

        def full(*_args):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(storage_sqlite3.Sqlite3Writer, "write", full)
    assert main(["kitti2bag", "odometry", str(seq), str(tmp_path / "bag"), "--storage", storage]) == EXIT_NO_SPACE
    line = _assert_one_line(capsys.readouterr().err, "kitti2bag", tmp_path / "bag")
    assert "no space left on device" in line


def _kdbts(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    kwargs = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.run(
        [sys.executable, "-m", "kdbts_ros.commands.cli", *args],
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        **kwargs,
    )


def test_the_installed_entry_point_exits_non_zero_with_one_line_and_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_text("hello\n")
    plain = _kdbts("import", str(bad), str(tmp_path / "y.safetensors"))
    assert plain.returncode == EXIT_USER
    _assert_one_line(plain.stderr, "import", bad)
    for debug in (
        _kdbts("import", str(bad), str(tmp_path / "y.safetensors"), "--debug"),
        _kdbts("--debug", "import", str(bad), str(tmp_path / "y.safetensors")),
        _kdbts("import", str(bad), str(tmp_path / "y.safetensors"), env={"KDBTS_DEBUG": "1"}),
    ):
        assert debug.returncode == EXIT_USER
        assert "Traceback (most recent call last)" in debug.stderr
        assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def test_a_full_stdout_is_reported_with_the_no_space_exit_code():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        done = _kdbts("params", stdout=full)
    assert done.returncode == EXIT_NO_SPACE
    assert done.stderr.strip() == "kdbts params: <stdout>: no space left on device"
