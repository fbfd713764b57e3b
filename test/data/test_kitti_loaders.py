"""KITTI raw, KITTI odometry and KITTI-360 loaders against the files' own numbers and independent chains."""

from __future__ import annotations

import re
import shutil

import cv2
import numpy as np
import pytest
from conftest import KITTI_SAMPLE, calib_numbers, homogeneous, needs_kitti, write_odometry

from kdbts_ros.data import shared_sample
from kdbts_ros.data.kitti360 import Kitti360Calibration, load_kitti360_sequence, read_indexed_poses, read_mei_yaml
from kdbts_ros.data.kitti_odometry import load_odometry_sequence
from kdbts_ros.data.kitti_raw import RawCalibration, load_raw_drive, oxts_poses, read_oxts
from kdbts_ros.data.records import DatasetError, RecordingFrames, parse_timestamp, read_velodyne
from kdbts_ros.data.rig import PERIOD_NS, START_NS
from kdbts_ros.training.samples import TrainingFrames

pytestmark = pytest.mark.integration

RAW_CALIB = KITTI_SAMPLE / shared_sample.RAW_CALIB
K360 = KITTI_SAMPLE / shared_sample.KITTI360_ROOT
K360_SEQ = shared_sample.KITTI360_SEQUENCE


def devkit_T_cam2_velo() -> np.ndarray:
    """The devkit's velodyne -> rectified camera 2 map, up to K: [I | t2] R_rect_00 Tr_velo_to_cam."""
    P = calib_numbers(RAW_CALIB / "calib_cam_to_cam.txt", "P_rect_02").reshape(3, 4)
    shift = np.eye(4)
    shift[:3, 3] = np.linalg.solve(P[:, :3], P[:, 3])
    R_rect = homogeneous(calib_numbers(RAW_CALIB / "calib_cam_to_cam.txt", "R_rect_00"), np.zeros(3))
    velo = RAW_CALIB / "calib_velo_to_cam.txt"
    return shift @ R_rect @ homogeneous(calib_numbers(velo, "R"), calib_numbers(velo, "T"))


def scan_in_image(frame, cam: int, points_cam: np.ndarray, width: int, height: int):
    """Depth and pixel (u, v) of the camera-frame points more than 1 m ahead that land in the image."""
    front = points_cam[:, points_cam[2] > 1.0]
    u, v = (frame.K(cam) @ front)[:2] / front[2]
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return front[2, inside], u[inside], v[inside]


# ---------------------------------------------------------------- KITTI raw


@needs_kitti
def test_raw_calibration_reads_the_rectified_projection_of_camera_02():
    cam = RawCalibration(RAW_CALIB).camera("image_02")
    np.testing.assert_allclose(cam.K, [[721.5377, 0, 609.5593], [0, 721.5377, 172.854], [0, 0, 1]])
    assert (cam.width, cam.height, cam.frame_id, cam.colour) == (1242, 375, "camera_color_left", True)
    right = RawCalibration(RAW_CALIB).camera("image_03")
    # Tx of the right colour camera relative to the left one: -fx * baseline (about 0.53 m)
    p2, p3 = (calib_numbers(RAW_CALIB / "calib_cam_to_cam.txt", k).reshape(3, 4) for k in ("P_rect_02", "P_rect_03"))
    tx = lambda P: (P[0, 3] - P[0, 2] * P[2, 3]) / P[0, 0]  # noqa: E731 - x of K^-1 P[:, 3]
    assert right.projection_tx == pytest.approx(721.5377 * (tx(p3) - tx(p2)), rel=1e-9)
    assert -0.55 < right.projection_tx / 721.5377 < -0.5


@needs_kitti
def test_raw_sample_camera_poses_follow_the_orbslam_file():
    rec = shared_sample.raw_sample(KITTI_SAMPLE)
    assert len(rec.frames) == 78 and rec.stamps_from == "10 Hz fallback" and rec.poses_from.startswith("ORB-SLAM")
    assert [f.stamp_ns for f in rec.frames[:2]] == [START_NS, START_NS + PERIOD_NS]
    orb = np.loadtxt(KITTI_SAMPLE / shared_sample.RAW_POSES).reshape(-1, 3, 4)
    P = calib_numbers(RAW_CALIB / "calib_cam_to_cam.txt", "P_rect_02").reshape(3, 4)
    T_cam2_cam0 = np.eye(4)
    T_cam2_cam0[:3, 3] = np.linalg.solve(P[:, :3], P[:, 3])
    T0 = rec.frames[0].T_world_cam(0)
    for i in (1, 30, 77):
        cam0 = homogeneous(orb[i, :, :3], orb[i, :, 3])
        # BTS: the left colour camera's motion is the cam0 motion seen through the baseline shift
        expected = T_cam2_cam0 @ cam0 @ np.linalg.inv(T_cam2_cam0)
        np.testing.assert_allclose(
            np.linalg.inv(T0) @ rec.frames[i].T_world_cam(0), expected, atol=1e-7
        )  # 9-digit file
    # the world is base_link (the IMU) of frame 0: z up, so the drive stays near the ground plane
    np.testing.assert_allclose(rec.frames[0].T_world_base, np.eye(4), atol=1e-6)
    travel = rec.frames[77].T_world_base[:3, 3]
    assert abs(travel[2]) < 0.05 * np.linalg.norm(travel[:2])


@needs_kitti
def test_raw_velodyne_projects_into_the_image_in_front_of_the_camera():
    rec = shared_sample.raw_sample(KITTI_SAMPLE)
    frame = rec.frames[0]
    pts = read_velodyne(frame.velodyne)
    assert pts.shape[1] == 4 and len(pts) > 100_000
    xyz1 = np.c_[pts[:, :3], np.ones(len(pts))]
    cam = (frame.T_cam_velo(0) @ xyz1.T)[:3]
    devkit = (devkit_T_cam2_velo() @ xyz1.T)[:3]
    np.testing.assert_allclose(cam, devkit, atol=1e-6)  # 7-digit rotations: R^T vs inverse
    depth, u, v = scan_in_image(frame, 0, cam, 1242, 375)
    assert len(depth) > 10_000
    # the car ahead in drive 0052 (image centre, below the horizon): a flat rear about 7.8 m away
    car = depth[(u >= 570) & (u < 690) & (v >= 220) & (v < 280)]
    assert len(car) > 100 and 7.0 < np.median(car) < 9.0 and np.percentile(car, 90) - np.percentile(car, 10) < 0.5
    # the lorry beside it on the right is nearer
    assert np.median(depth[(u >= 1050) & (u < 1200) & (v >= 100) & (v < 300)]) < 6.0
    # nothing projects into the sky band at the top of the image (the scanner looks no higher than ~2 deg)
    assert (v < 100).sum() < 0.01 * len(v)


def test_oxts_conversion_matches_mercator_distances_and_heading():
    lat0, lon0 = 49.0, 8.4
    packets = np.zeros((3, 30))
    packets[:, 0:3] = [[lat0, lon0, 110.0], [lat0 + 1e-4, lon0, 111.0], [lat0, lon0 + 1e-4, 110.0]]
    packets[:, 5] = [0.0, 0.5, -1.0]  # yaw
    poses = oxts_poses(packets)
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-12)
    # 1e-4 degrees of latitude: the Earth's radius times the angle, north = +y; altitude is z
    np.testing.assert_allclose(poses[1, :3, 3], [0, 6378137.0 * np.radians(1e-4), 1.0], rtol=1e-6, atol=1e-6)
    # 1e-4 degrees of longitude at 49 degrees: shortened by cos(latitude), east = +x
    np.testing.assert_allclose(
        poses[2, :3, 3], [6378137.0 * np.radians(1e-4) * np.cos(np.radians(lat0)), 0, 0], rtol=1e-9, atol=1e-9
    )
    np.testing.assert_allclose(poses[1, :2, 0], [np.cos(0.5), np.sin(0.5)], atol=1e-12)


@needs_kitti
def test_generated_raw_drive_with_oxts_and_timestamps(tmp_path):
    date = tmp_path / "2011_09_26"
    drive = date / "2011_09_26_drive_0001_sync"
    for f in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        (date).mkdir(exist_ok=True)
        shutil.copy(RAW_CALIB / f, date / f)
    packets = np.zeros((3, 30))
    packets[:, 0] = 49.0 + np.arange(3) * 1e-5
    packets[:, 1] = 8.4
    packets[:, 5] = np.pi / 2  # heading north
    for cam in ("image_02", "image_03"):
        (drive / cam / "data").mkdir(parents=True)
        (drive / cam / "timestamps.txt").write_text("".join(f"2011-09-26 13:02:25.{i}61661696\n" for i in range(3)))
        for i in range(3):
            cv2.imwrite(str(drive / cam / "data" / f"{i:010d}.png"), np.zeros((8, 8, 3), np.uint8))
    (drive / "oxts" / "data").mkdir(parents=True)
    for i, p in enumerate(packets):
        (drive / "oxts" / "data" / f"{i:010d}.txt").write_text(" ".join(f"{v:.12f}" for v in p) + "\n")

    rec = load_raw_drive(drive)  # calibration from the date folder, poses from OXTS
    assert [c.frame_id for c in rec.rig.cameras] == ["camera_color_left", "camera_color_right"]
    assert rec.stamps_from == "dataset" and rec.poses_from.startswith("OXTS")
    assert rec.frames[1].stamp_ns - rec.frames[0].stamp_ns == 100_000_000
    assert rec.frames[0].stamp_ns == parse_timestamp("2011-09-26 13:02:25.061661696")
    np.testing.assert_allclose(rec.frames[2].T_world_base, oxts_poses(packets)[2], atol=1e-9)
    assert rec.frames[2].T_world_base[1, 3] == pytest.approx(2 * 6378137.0 * np.radians(1e-5), rel=1e-5)
    # the camera pose chain of pykitti: T_w_imu inv(T_cam2_imu), T_cam2_imu = [I|t2] R_rect Tr_velo Tr_imu
    imu = RAW_CALIB / "calib_imu_to_velo.txt"
    T_cam2_imu = devkit_T_cam2_velo() @ homogeneous(calib_numbers(imu, "R"), calib_numbers(imu, "T"))
    np.testing.assert_allclose(
        rec.frames[2].T_world_cam(0), oxts_poses(packets)[2] @ np.linalg.inv(T_cam2_imu), atol=1e-6
    )
    np.testing.assert_allclose(read_oxts(drive / "oxts" / "data")[1], oxts_poses(packets)[1], atol=1e-9)


@needs_kitti
def test_raw_errors_name_the_file(tmp_path):
    bad = tmp_path / "calib"
    shutil.copytree(RAW_CALIB, bad)
    text = (bad / "calib_cam_to_cam.txt").read_text().replace("P_rect_02: 7.215377e+02 ", "P_rect_02: ")
    (bad / "calib_cam_to_cam.txt").write_text(text)
    with pytest.raises(DatasetError, match=r"calib_cam_to_cam.txt: P_rect_02 has 11 numbers"):
        load_raw_drive(KITTI_SAMPLE / shared_sample.RAW_IMAGES, bad)
    (bad / "calib_imu_to_velo.txt").unlink()
    with pytest.raises(DatasetError, match=re.escape("calib_imu_to_velo.txt")):
        load_raw_drive(KITTI_SAMPLE / shared_sample.RAW_IMAGES, bad)
    short = tmp_path / "poses.txt"
    short.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(DatasetError, match=re.escape("poses.txt has 1 poses but the drive has frame 77")):
        load_raw_drive(KITTI_SAMPLE / shared_sample.RAW_IMAGES, RAW_CALIB, short)
    truncated = tmp_path / "0.bin"
    truncated.write_bytes(np.zeros(6, np.float32).tobytes())
    with pytest.raises(DatasetError, match=re.escape("0.bin has 6 floats")):
        read_velodyne(truncated)


# ---------------------------------------------------------------- KITTI odometry


def test_generated_odometry_sequence(tmp_path):
    seq, _poses = write_odometry(tmp_path)
    rec = load_odometry_sequence(seq)  # poses found at ../../poses/00.txt
    assert [c.name for c in rec.rig.cameras] == ["image_0", "image_1", "image_2", "image_3"]
    assert [c.colour for c in rec.rig.cameras] == [False, False, True, True]
    assert (rec.rig.cameras[0].width, rec.rig.cameras[0].height) == (32, 16)
    assert [f.stamp_ns - START_NS for f in rec.frames] == [round(0.1037 * i * 1e9) for i in range(4)]
    # camera z forward is base x forward: the z-up world sees 0.8 m per frame along x
    np.testing.assert_allclose(
        [f.T_world_base[:3, 3] for f in rec.frames], [[0.8 * i, 0, 0] for i in range(4)], atol=1e-12
    )
    # right grey camera: 0.54 m to the right of camera 0, so Tx = -fx * 0.54
    assert rec.rig.cameras[1].projection_tx == pytest.approx(-20.0 * 0.54)
    T_c0_c1 = np.linalg.inv(rec.frames[2].T_world_cam(0)) @ rec.frames[2].T_world_cam(1)
    np.testing.assert_allclose(T_c0_c1[:3, 3], [0.54, 0, 0], atol=1e-12)
    # Tr maps velodyne x (forward) to camera z: the velodyne point 10 m ahead is 10 m - 0.27 m in front
    p = rec.frames[0].T_cam_velo(0) @ [10.0, 0, 0, 1]
    np.testing.assert_allclose(p[:3], [0, -0.08, 9.73], atol=1e-12)
    assert rec.frames[3].velodyne.name == "000003.bin"


def test_odometry_errors_name_the_file(tmp_path):
    seq, _ = write_odometry(tmp_path)
    (tmp_path / "poses" / "00.txt").write_text("1 2 3\n")
    with pytest.raises(DatasetError, match=r"00.txt: expected 12 finite numbers per line"):
        load_odometry_sequence(seq)
    (seq / "image_2" / "000001.png").write_bytes(b"not a png")
    (seq / "image_2" / "000000.png").write_bytes(b"not a png either, still too short")
    with pytest.raises(DatasetError, match=r"000000.png is not a PNG"):
        load_odometry_sequence(seq, poses=None, cameras=["image_2"])


# ---------------------------------------------------------------- KITTI-360


@needs_kitti
def test_kitti360_camera_poses_agree_with_cam0_to_world_and_frame_100_has_none():
    rec = shared_sample.kitti360_sample(KITTI_SAMPLE)
    assert [f.index for f in rec.frames] == [100, 250, 360, 570, 644, 729, 947, 1134, 1280, 1338]
    assert rec.poses_from.startswith("poses.txt")
    unposed = [f.index for f in rec.frames if f.T_world_base is None]
    assert unposed == [100]
    with pytest.raises(DatasetError, match="frame 100 has no pose"):
        rec.frames[0].T_world_cam(0)
    cam0_to_world = read_indexed_poses(K360 / "data_poses" / K360_SEQ / "cam0_to_world.txt")
    for f in rec.posed():
        # cam0_to_world.txt is printed with 6-7 digits
        np.testing.assert_allclose(f.T_world_cam(0), cam0_to_world[f.index], atol=2e-3)
    # stamps are the image_00 timestamps, by frame index
    line = (K360 / "data_2d_raw" / K360_SEQ / "image_00" / "timestamps.txt").read_text().splitlines()[250]
    assert rec.frames[1].stamp_ns == int(np.datetime64(line.replace(" ", "T"), "ns").astype(np.int64))


@needs_kitti
def test_kitti360_calibration_stereo_velodyne_and_fisheye():
    calib = Kitti360Calibration(K360 / "calibration")
    cam0, cam1 = calib.camera("image_00"), calib.camera("image_01")
    np.testing.assert_allclose(cam0.K, [[552.554261, 0, 682.049453], [0, 552.554261, 238.769549], [0, 0, 1]])
    assert (cam0.width, cam0.height) == (1408, 376)
    # the rectified pair from cam_to_pose and R_rect agrees with P_rect_01's baseline
    T_01 = np.linalg.inv(cam0.T_base_cam) @ cam1.T_base_cam
    np.testing.assert_allclose(T_01[:3, :3], np.eye(3), atol=2e-4)
    np.testing.assert_allclose(T_01[:3, 3], [328.318735 / 552.554261, 0, 0], atol=2e-3)
    assert cam1.projection_tx == pytest.approx(-328.318735)
    # velodyne -> rectified camera 0 as kitti360Scripts: R_rect_00 inv(cam_to_velo)
    R_rect = homogeneous(calib_numbers(K360 / "calibration/perspective.txt", "R_rect_00"), np.zeros(3))
    c2v = np.r_[np.loadtxt(K360 / "calibration/calib_cam_to_velo.txt").reshape(3, 4), [[0, 0, 0, 1]]]
    T = calib.rig(["image_00"]).T_cam_velo(0)
    np.testing.assert_allclose(T, R_rect @ np.linalg.inv(c2v), atol=1e-9)
    fish = calib.fisheye["image_02"]
    assert (fish.width, fish.height, fish.xi) == (1400, 1400, pytest.approx(2.2134047507854890))
    np.testing.assert_allclose(fish.pixels(np.array([[0.0, 0.0, 5.0]])), [[fish.u0, fish.v0]])
    assert read_mei_yaml(K360 / "calibration/image_03.yaml").name == "image_03"


@needs_kitti
def test_kitti360_velodyne_lands_in_front_of_camera_00():
    rec = shared_sample.kitti360_sample(KITTI_SAMPLE)
    f = rec.frames[1]
    pts = read_velodyne(f.velodyne)
    cam = (f.T_cam_velo(0) @ np.c_[pts[:, :3], np.ones(len(pts))].T)[:3]
    depth, _, v = scan_in_image(f, 0, cam, 1408, 376)
    assert len(depth) > 5_000
    # the bottom rows see the road close by, the rows nearer the horizon the far scene
    assert np.median(depth[v > 300]) < np.median(depth[v < 200])


@needs_kitti
def test_kitti360_as_training_frames():
    rec = shared_sample.kitti360_sample(KITTI_SAMPLE)
    frames = RecordingFrames([rec])
    assert frames.cameras == ["image_00", "image_01"] and frames.num_frames(K360_SEQ) == 9
    np.testing.assert_allclose(frames.cam_to_world(K360_SEQ, 1, 0), rec.frames[1].T_world_cam(1))
    sample = TrainingFrames(frames, side_offset=1)[0]
    assert tuple(sample["images"].shape) == (4, 3, 376, 1408)
    T = sample["T_ref"].numpy()
    np.testing.assert_allclose(T[0], np.eye(4), atol=1e-6)
    np.testing.assert_allclose(T[2][:3, 3], [0.594, 0, 0], atol=2e-3)  # the right camera at the same time


@needs_kitti
def test_kitti360_missing_calibration_is_named(tmp_path):
    root = tmp_path / "k360"
    shutil.copytree(K360 / "calibration", root / "calibration")
    (root / "calibration" / "calib_cam_to_velo.txt").unlink()
    (root / "data_2d_raw" / K360_SEQ / "image_00" / "data_rect").mkdir(parents=True)
    with pytest.raises(DatasetError, match=re.escape("calib_cam_to_velo.txt")):
        load_kitti360_sequence(root, K360_SEQ)


@needs_kitti
def test_training_reads_a_kitti360_recording_resized_through_its_config(tmp_path):
    from kdbts_ros.core.model.checkpoint import load_checkpoint
    from kdbts_ros.core.settings import load_config
    from kdbts_ros.training.config import TrainConfig
    from kdbts_ros.training.trainer import build_dataset, train

    cfg = load_config(
        TrainConfig,
        None,
        {
            "data.sources": [f"kitti360 {K360} sequence={K360_SEQ}"],
            "data.width": 176,
            "data.height": 64,
            "data.side_offset": 0,
            "data.colour_jitter": 0.0,
            "model.backbone": "resnet18",
            "model.feature_dim": 8,
            "model.mv_hidden": 16,
            "loss.patches": 2,
            "loss.samples": 8,
            "method": "mvbts",
            "iterations": 2,
            "batch_size": 1,
            "log_every": 1,
            "checkpoint_every": 2,
            "threads": 1,
            "device": "cpu",
        },
        TrainConfig,
    )
    dataset = build_dataset(cfg, 0)
    assert len(dataset) == 8  # 9 posed frames: 8 (t, t+1) pairs
    sample = dataset[0]
    assert tuple(sample["images"].shape) == (4, 3, 64, 176)
    # the resize keeps the normalised intrinsics of the recorded 1408x376 image
    K = np.array([[552.554261, 0, 682.049453], [0, 552.554261, 238.769549], [0, 0, 1]])
    expected = [
        [2 * K[0, 0] / 1408, 0, 2 * K[0, 2] / 1408 - 1],
        [0, 2 * K[1, 1] / 376, 2 * K[1, 2] / 376 - 1],
        [0, 0, 1],
    ]
    np.testing.assert_allclose(sample["Kn"][0].numpy(), expected, atol=1e-6)
    train(cfg, tmp_path / "run", progress=False)
    _, info = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert (info["image_width"], info["image_height"]) == (176, 64)


@needs_kitti
@pytest.mark.parametrize("dataset", ["raw", "kitti360"])
def test_base_link_is_level_and_the_road_lies_where_the_rig_says(dataset):
    """base_link is REP-103 (z up) in both datasets and the road lies ``rig.ground_z`` below it (base_footprint's
    place): the road plane of the velodyne scans, fitted with open3d's RANSAC in base_link."""
    o3d = pytest.importorskip("open3d")
    rec = shared_sample.raw_sample(KITTI_SAMPLE) if dataset == "raw" else shared_sample.kitti360_sample(KITTI_SAMPLE)
    assert rec.rig.cameras[0].T_base_cam[2, 1] < -0.95  # the image's down is base_link's -z
    T = rec.rig.T_base_velo
    o3d.utility.random.seed(0)
    for f in [f for f in rec.frames if f.velodyne is not None][:5]:
        p = read_velodyne(f.velodyne)[:, :3] @ T[:3, :3].T + T[:3, 3]
        road = p[(np.abs(p[:, 1]) < 6) & (p[:, 0] > 3) & (p[:, 0] < 20)]  # the lane ahead, beside parked cars
        plane, inliers = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(road)).segment_plane(0.05, 3, 500)
        normal, offset = np.sign(plane[2]) * np.asarray(plane[:3]), np.sign(plane[2]) * plane[3]  # the normal up
        assert len(inliers) > 5000 and normal[2] > np.cos(np.radians(5))  # a level road
        assert -offset / normal[2] == pytest.approx(rec.rig.ground_z, abs=0.06)
