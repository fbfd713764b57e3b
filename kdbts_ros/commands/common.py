"""Argument groups and helpers shared by several ``kdbts`` sub-commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kdbts_ros.core.settings import ConfigError
from kdbts_ros.runtime.config import load_runner_config


def add_config_args(p: argparse.ArgumentParser) -> None:
    """--config, --checkpoint, --mode: the node's parameter file and what overrides it (read by :func:`config`)."""
    p.add_argument("--config", type=Path, help="YAML parameter file (the node's format); default: built-in")
    p.add_argument(
        "--checkpoint",
        help="project checkpoint (.safetensors), a name from 'kdbts weights list' once "
        "fetched, or 'random' for seeded random weights; default: the config's "
        "model.checkpoint (empty: the embedded KDBTS network)",
    )
    p.add_argument("--mode", choices=("sv", "mv", "auto"), help="density head (overrides the config)")


def config(args: argparse.Namespace, overrides: dict | None = None):
    """The pipeline configuration of :func:`add_config_args`' arguments, plus ``overrides``."""
    overrides = dict(overrides or {})
    if args.checkpoint:
        overrides["model.checkpoint"] = args.checkpoint
    if args.mode:
        overrides["mode"] = args.mode
    return load_runner_config(args.config, overrides)


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    """Where the parts of a KITTI raw / odometry / KITTI-360 recording are, when not in the standard layout."""
    p.add_argument("--sequence", help="kitti360: sequence name, e.g. 2013_05_28_drive_0000_sync")
    p.add_argument(
        "--calib",
        type=Path,
        help="raw: the date folder with calib_*.txt (default: SOURCE/..); "
        "odometry: calib.txt (default: SOURCE/calib.txt); "
        "kitti360: the calibration folder (default: SOURCE/calibration)",
    )
    p.add_argument(
        "--poses",
        type=Path,
        help="raw: ORB-SLAM pose file (default: the drive's OXTS packets); "
        "odometry: poses/NN.txt (default: SOURCE/../../poses/NN.txt); "
        "kitti360: poses.txt (default: data_poses/SEQ/poses.txt)",
    )
    p.add_argument(
        "--cameras",
        nargs="+",
        help="dataset camera folders, e.g. image_02 image_03; kitti360: "
        "image_00 image_01 (perspective), image_02 image_03 (fisheyes, "
        "as virtual pinholes) (default: every one present; eval scores "
        "the first)",
    )


def overrides(pairs: list[str]) -> dict[str, object]:
    """KEY=VALUE command-line settings, values parsed as YAML scalars (2e-4, true, text)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {pair}: not a YAML value ({getattr(exc, 'problem', None) or exc})") from exc
    return out


def csv(text: str) -> list[str]:
    """The items of a comma-separated argument, empty ones left out."""
    return [item for item in text.split(",") if item]


def print_counts(counts: dict[str, int]) -> None:
    """Messages written per topic, one line each."""
    for topic, count in sorted(counts.items()):
        print(f"    {count:5d} x {topic}")


def write_report(out: Path, name: str, report: dict, table: str) -> None:
    """Write ``name``.json and ``name``.md into ``out`` and print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    (out / f"{name}.md").write_text(table)
    print(table, end="")
    print(f"wrote {out / f'{name}.json'} and {out / f'{name}.md'}")
