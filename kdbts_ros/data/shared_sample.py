"""The real KITTI and KITTI-360 samples under ``../shared/data/kitti`` (scattered over several folders)."""

from __future__ import annotations

from pathlib import Path

from kdbts_ros.data.kitti360 import load_kitti360_sequence
from kdbts_ros.data.kitti_raw import load_raw_drive
from kdbts_ros.data.records import Recording

RAW_DRIVE = "2011_09_26_drive_0052_sync"
RAW_IMAGES = "SFND_3D_Object_Tracking/images/KITTI/2011_09_26"  # image_02/data and velodyne_points/data
RAW_CALIB = "python_camera_library/test_data/kitti/2011_09_26_calib/2011_09_26"
RAW_POSES = f"BehindTheScenes/datasets/kitti_raw/orb-slam_poses/2011_09_26/{RAW_DRIVE}.txt"
KITTI360_ROOT = "Lidar_Object_Detection/KITTI360_sample"
KITTI360_SEQUENCE = "2013_05_28_drive_0000_sync"


def raw_sample(root: Path) -> Recording:
    """Drive 0052 of 2011-09-26: left colour camera, velodyne (first 10 scans), ORB-SLAM poses, 10 Hz stamps."""
    return load_raw_drive(root / RAW_IMAGES, root / RAW_CALIB, root / RAW_POSES, name=RAW_DRIVE)


def kitti360_sample(root: Path) -> Recording:
    """KITTI-360 sequence 0000: 10 frames of cameras 00 and 01 (frame 100 has no pose), 5 velodyne scans."""
    return load_kitti360_sequence(root / KITTI360_ROOT, KITTI360_SEQUENCE)
