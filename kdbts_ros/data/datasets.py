"""The dataset kinds the tools accept: one loader and one set of bag conventions for each."""

from __future__ import annotations

from pathlib import Path

from kdbts_ros.data.kitti360 import load_kitti360_sequence
from kdbts_ros.data.kitti_bag import KITTI, KITTI360, BagConventions
from kdbts_ros.data.kitti_odometry import load_odometry_sequence
from kdbts_ros.data.kitti_raw import load_raw_drive
from kdbts_ros.data.records import DatasetError, Recording

KINDS = ("raw", "odometry", "kitti360")


def load_recording(
    kind: str,
    source: Path,
    calib: Path | None = None,
    poses: Path | None = None,
    sequence: str | None = None,
    cameras: list[str] | None = None,
) -> Recording:
    """Load a KITTI raw drive, KITTI odometry sequence or KITTI-360 sequence (``sequence`` names it)."""
    if kind == "raw":
        return load_raw_drive(source, calib, poses, cameras)
    if kind == "odometry":
        return load_odometry_sequence(source, poses, cameras, calib)
    if kind == "kitti360":
        if not sequence:
            raise DatasetError("KITTI-360 needs a sequence name, e.g. 2013_05_28_drive_0000_sync")
        return load_kitti360_sequence(source, sequence, cameras, calib, poses)
    raise DatasetError(f"unknown dataset kind {kind!r}; expected one of {KINDS}")


def conventions(kind: str) -> BagConventions:
    """Topic and frame names used for ``kind``."""
    return KITTI360 if kind == "kitti360" else KITTI
