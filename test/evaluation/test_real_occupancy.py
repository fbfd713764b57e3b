"""KITTI-360 lidar occupancy: polar profiles, the per-scan rule, the J - 2 vote, and `kdbts eval` on a generated
drive.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import KITTI_SAMPLE, needs_kitti, slab_model

from kdbts_ros.commands.cli import main
from kdbts_ros.core.lens import KITTI_360, CanonicalCamera
from kdbts_ros.core.model.checkpoint import save_checkpoint
from kdbts_ros.data import shared_sample
from kdbts_ros.data.kitti360 import load_kitti360_sequence
from kdbts_ros.evaluation.protocol import OccupancyProtocol
from kdbts_ros.evaluation.real_depth import RealDepthEvaluator, RealDepthSettings
from kdbts_ros.evaluation.real_occupancy import (
    LidarOccupancy,
    LidarOccupancySettings,
    aggregate_votes,
    lidar_occupancy,
    occupied_in_scan,
    polar_profile,
    surface_range,
)

pytestmark = pytest.mark.integration

# level frame (x right, y down, z forward) -> velodyne / base_link (x forward, y left, z up)
R_BASE_LEVEL = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])


def wall(x: float, height: float = 0.0, half_width: float = 30.0) -> np.ndarray:
    """Velodyne returns (N, 4) of a wall across the road at forward distance x, one row at ``height`` (z up)."""
    y = np.arange(-half_width, half_width, 0.02)
    return np.stack([np.full_like(y, x), y, np.full_like(y, height), np.ones_like(y)], 1)


def test_polar_profile_keeps_the_nearest_return_and_fills_empty_bins_forward():
    deg = np.deg2rad
    pts = np.array(
        [
            [5 * np.cos(deg(0.5)), 5 * np.sin(deg(0.5))],
            [4 * np.cos(deg(0.7)), 4 * np.sin(deg(0.7))],
            [8 * np.cos(deg(10.5)), 8 * np.sin(deg(10.5))],
        ]
    )
    profile = polar_profile(pts)
    # bin k spans [k - 180, k - 179) degrees
    assert profile[180] == pytest.approx(4.0)  # both returns of [0, 1) deg: the nearer
    assert np.allclose(profile[181:190], 4.0)  # empty: the previous bin's range
    assert profile[190] == pytest.approx(8.0) and np.allclose(profile[191:], 8.0)
    assert np.allclose(profile[:180], 5.0)  # before the first return: the smallest bearing's range
    assert np.isinf(polar_profile(np.zeros((0, 2)))).all()


def test_surface_range_interpolates_between_bin_centres_across_pi():
    profile = np.full(360, 6.0)
    profile[189], profile[190] = 4.0, 8.0  # centres 9.5 and 10.5 deg
    assert surface_range(profile, np.deg2rad([10.0, 9.5]))[:2] == pytest.approx([6.0, 4.0])
    profile[0], profile[359] = 2.0, 4.0  # centres -179.5 and 179.5 deg: neighbours across +-180
    assert surface_range(profile, np.array([-np.pi, np.pi])) == pytest.approx([3.0, 3.0])


def test_points_in_front_of_a_wall_are_free_behind_it_occupied():
    profile = polar_profile(wall(10.0)[:, :2])
    pts = np.array([[6.0, 0, 0], [12.0, 0, 0], [2.0, 0, 0], [6.0, 3.0, 0], [10.2, 2.0, 0], [9.96, 0, 0]])
    exact = occupied_in_scan(pts, profile, homogeneous_norm=False)
    # in front; behind; inside the 3 m blind zone; in front at a bearing; just behind at a bearing; 4 cm in front
    assert exact.tolist() == [False, True, True, False, True, False]
    # the official range is |(x, y, z, 1)|: a point 4 cm in front of the wall reads sqrt(9.96^2 + 1) > 10
    assert occupied_in_scan(pts, profile)[-1]


def test_occupied_needs_j_minus_2_votes():
    votes = np.zeros((5, 4), bool)
    for col, n in enumerate((2, 3, 4, 5)):
        votes[:n, col] = True
    assert aggregate_votes(votes).tolist() == [False, True, True, True]
    votes20 = np.zeros((20, 2), bool)
    votes20[:17, 0] = votes20[:18, 1] = True
    assert aggregate_votes(votes20).tolist() == [False, True]


def test_only_returns_in_the_slice_band_or_far_away_form_the_surface():
    s = LidarOccupancySettings(scans=1, protocol=OccupancyProtocol(pitch_deg=0.0))
    assert s.protocol.level_bands().tolist() == [[0.0, 0.75]] and s.far_range() == pytest.approx(np.hypot(20, 4))
    T = np.eye(4)
    T[:3, :3] = R_BASE_LEVEL.T  # velodyne -> level
    cloud = np.vstack(
        [
            wall(6.0, height=1.0),  # 1 m above the camera: outside the band, ignored
            wall(15.0, height=2.0),  # above the band and nearer than 20.4 m: ignored
            wall(25.0, height=3.0),
        ]
    )  # above the band but far: part of the surface
    query = np.array([[[0.0, 0.375, 8.0], [0.0, 0.375, 18.0], [0.0, 0.375, 26.0]]])  # level frame, straight ahead
    # with one scan the J - 2 vote passes everywhere ((1 + votes) / 1 > -1): what counts is the scan's visibility
    occupied, visible = lidar_occupancy(query, [(cloud, T)], s)
    assert occupied.all() and visible.tolist() == [True, True, False]
    banded = np.vstack([cloud, wall(12.0, height=-0.4)])  # 0.4 m below the camera: in the band
    assert lidar_occupancy(query, [(banded, T)], s)[1].tolist() == [True, False, False]


# ---------------------------------------------------------------- a generated KITTI-360 drive

SEQ = "2013_05_28_drive_0042_sync"
BOX = (10.0, 12.0, -3.0, -1.5)  # base x from, to (forward), base y from, to (left): a box on the right
BACKGROUND = 40.0  # a ring of returns around each scanner position
STEP = 1.0  # metres driven forward per frame
FRAMES = 23  # frames 0..22; frame 22 has no pose
LEVELS = np.linspace(-1.0, 1.5, 11)  # level-frame heights (down) of the returns
BOX_HEIGHTS = (0.1, 0.65)  # the box spans these level-frame heights (down), around the 0.375 m slice
PITCH = 5.0


def box_entry(origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Distance along each unit direction (N, 2) from ``origin`` to where the ray enters BOX; inf if it misses."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = (np.array(BOX[:2])[None] - origin[0]) / dirs[:, :1]
        ty = (np.array(BOX[2:])[None] - origin[1]) / dirs[:, 1:]
    t0 = np.maximum(np.nanmin(tx, 1), np.nanmin(ty, 1))
    t1 = np.minimum(np.nanmax(tx, 1), np.nanmax(ty, 1))
    return np.where((t1 >= t0) & (t0 > 0), t0, np.inf)


def scan(j: int) -> np.ndarray:
    """Velodyne returns (N, 4) of frame j at every height of LEVELS: the box where it spans the height, else the ring.

    The box is low (BOX_HEIGHTS), so only a correctly levelled slice band sees it.
    """
    bearings = np.deg2rad(np.arange(-180, 180, 0.2))
    dirs = np.stack([np.cos(bearings), np.sin(bearings)], 1)
    box = np.minimum(box_entry(np.array([STEP * j, 0.0]), dirs), BACKGROUND)
    pts = []
    for y in LEVELS:
        r = box if BOX_HEIGHTS[0] <= y <= BOX_HEIGHTS[1] else np.full_like(box, BACKGROUND)
        pts.append(np.c_[r * dirs[:, 0], r * dirs[:, 1], np.full_like(r, -y), np.ones_like(r)])
    return np.vstack(pts).astype(np.float32)


def write_kitti360(root: Path) -> np.ndarray:
    """A KITTI-360 layout driving straight past BOX; camera 0 pitched 5 deg down at the velodyne. Returns T_base_cam."""
    a = np.deg2rad(PITCH)
    R_cam_level = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    T_base_cam = np.eye(4)
    T_base_cam[:3, :3] = R_BASE_LEVEL @ R_cam_level.T
    row = " ".join(f"{v:.12e}" for v in T_base_cam[:3].ravel())
    calib = root / "calibration"
    calib.mkdir(parents=True)
    (calib / "perspective.txt").write_text(
        "P_rect_00: 32 0 32 0 0 32 16 0 0 0 1 0\nR_rect_00: 1 0 0 0 1 0 0 0 1\nS_rect_00: 64 32\n"
    )
    (calib / "calib_cam_to_pose.txt").write_text(f"image_00: {row}\n")
    (calib / "calib_cam_to_velo.txt").write_text(row + "\n")  # velodyne = pose frame
    images = root / "data_2d_raw" / SEQ / "image_00" / "data_rect"
    velo = root / "data_3d_raw" / SEQ / "velodyne_points" / "data"
    images.mkdir(parents=True)
    velo.mkdir(parents=True)
    lines = []
    for j in range(FRAMES):
        cv2.imwrite(str(images / f"{j:010d}.png"), np.full((32, 64, 3), 8 * j, np.uint8))
        scan(j).tofile(velo / f"{j:010d}.bin")
        if j < FRAMES - 1:
            lines.append(f"{j} 1 0 0 {STEP * j} 0 1 0 0 0 0 1 0")
    (root / "data_poses" / SEQ).mkdir(parents=True)
    (root / "data_poses" / SEQ / "poses.txt").write_text("\n".join(lines) + "\n")
    return T_base_cam


def expected_truth(frame: int, window: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Independent ground truth: a query point is occupied in scan j if the segment from scanner j meets BOX first.

    ``window``: the frames whose scans vote (default: ``frame`` and the 19 next).
    """
    window = window or list(range(frame, frame + 20))
    J = len(window)
    pts = OccupancyProtocol(pitch_deg=PITCH).points_level().reshape(-1, 3) @ R_BASE_LEVEL.T
    xy = pts[:, :2] + [STEP * frame, 0.0]
    votes = []
    for j in window:
        d = xy - [STEP * j, 0.0]
        dist = np.linalg.norm(d, axis=1)
        hidden = box_entry(np.array([STEP * j, 0.0]), d / dist[:, None]) < dist
        votes.append(hidden | (dist < 3.0))
    votes = np.array(votes)
    return votes.sum(0) >= J - 2, ~votes[0]


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("k360")
    write_kitti360(root)
    return root


def test_ground_truth_of_a_generated_drive_matches_the_geometry(drive):
    rec = load_kitti360_sequence(drive, SEQ)
    occ = LidarOccupancy(rec, list(range(0, FRAMES, 2)))
    assert sorted(occ.truth) == [0, 2]
    assert dict(occ.skipped) == {"fewer than 19 posed frames after it": 9, "no pose": 1}
    assert occ.message(12) == (
        "occupancy ground truth (20 scans) for 2 of 12 frames; skipped: "
        "9 fewer than 19 posed frames after it, 1 no pose"
    )
    for i in (0, 2):
        occupied, visible = occ.truth[i]
        want_occ, want_vis = expected_truth(i)
        gt, want = occupied & ~visible, want_occ & ~want_vis
        assert np.mean(visible == want_vis) > 0.98
        assert np.mean(gt == want) > 0.98  # disagreement only along the box's and the shadow's edges
        assert gt.sum() > 200 and (~visible & ~occupied).sum() > 200  # the box, and the shadow seen from the side


def test_the_window_is_the_next_posed_frames_and_needs_every_scan(drive, tmp_path):
    import shutil

    root = tmp_path / "k360"
    shutil.copytree(drive, root)
    poses = root / "data_poses" / SEQ / "poses.txt"
    poses.write_text("".join(line + "\n" for line in poses.read_text().splitlines() if not line.startswith("5 ")))
    (root / "data_3d_raw" / SEQ / "velodyne_points" / "data" / f"{21:010d}.bin").unlink()
    rec = load_kitti360_sequence(root, SEQ)
    occ = LidarOccupancy(rec, [0, 5, 13])
    # frame 5 stands still (no pose): frame 0's window is 0-4 and 6-20, as the official walk over poses.txt ids
    assert sorted(occ.truth) == [0] and dict(occ.skipped) == {"no pose": 1, "fewer than 19 posed frames after it": 1}
    occupied, visible = occ.truth[0]
    want_occ, want_vis = expected_truth(0, [0, 1, 2, 3, 4] + list(range(6, 21)))
    assert np.mean((occupied & ~visible) == (want_occ & ~want_vis)) > 0.98
    # frame 1's window (1-4, 6-21) reaches frame 21, which has no scan
    assert dict(LidarOccupancy(rec, [1]).skipped) == {"a scan missing in its window": 1}


def ckpt(path: Path, z: float) -> str:
    """A single-view slab network at camera depth z, saved with a small input size."""
    model = slab_model(z)
    model.available_heads = ["sv"]
    save_checkpoint(path, model, {"image_height": 64, "image_width": 192})
    return str(path)


def test_eval_command_on_a_generated_kitti360_drive(drive, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [
        "eval",
        str(drive),
        "--dataset",
        "kitti360",
        "--sequence",
        SEQ,
        "--stride",
        "2",
        "--out",
        str(out),
        "--model",
        f"FAR={ckpt(tmp_path / 'far.safetensors', 60.0)}",
        f"BOX={ckpt(tmp_path / 'box.safetensors', 7.5)}",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "occupancy ground truth (20 scans) for 2 of 12 frames" in printed
    table = (out / "results.md").read_text().splitlines()
    assert table[0].startswith("| model | O_acc ↑ | IE_acc ↑ | IE_rec ↑ | Abs Rel ↓")
    report = json.loads((out / "results.json").read_text())
    assert report["occupancy"]["frames"] == 2 and report["occupancy"]["skipped"]["no pose"] == 1
    far, box = report["results"]["FAR (SV)"], report["results"]["BOX (SV)"]
    assert far["occupancy_frames"] == 2 and far["frames"] == 12  # depth on every frame with a scan
    # predicting empty everywhere: right on every empty point, every hidden empty point recalled
    truth = [expected_truth(i) for i in (0, 2)]
    assert far["o_acc"] == pytest.approx(np.mean([1 - np.mean(o & ~v) for o, v in truth]), abs=0.02)
    assert far["ie_rec"] == 1.0 and far["o_rec"] == 0.0
    # occupied beyond 7.5 m: finds the box but fills the seen-through shadow and the open road
    assert box["o_rec"] > 0.95 and box["ie_rec"] < 0.5 and box["o_acc"] < far["o_acc"]
    # depth: every return lies within 40 m of the scanner (the ring, or the box before it), so the wall rendered
    # at 60 m or just behind it is more than 1.25 times too far everywhere and at least half too far
    assert far["a1"] == 0.0 and 0.49 < far["abs_rel"] < 10
    # the 7.5 m wall is within 1.25 times the box's depth where the car is 6-9 m before it (frames 2-4)
    assert box["a1"] > 0 and 0 < box["abs_rel"] < 10

    assert main(args + ["--occ-scans", "30"]) == 0  # no frame has 30 scans: depth only, and why
    captured = capsys.readouterr()
    assert "for 0 of 12 frames" in captured.err
    assert "O_acc" not in (out / "results.md").read_text()


@needs_kitti
def test_the_kitti360_sample_has_no_20_posed_frames_with_scans():
    rec = shared_sample.kitti360_sample(KITTI_SAMPLE)
    with_scans = [i for i, f in enumerate(rec.frames) if f.velodyne is not None]
    occ = LidarOccupancy(rec, with_scans)  # scans of frames 100 (no pose), 250, 360, 570, 644
    assert not occ.truth and dict(occ.skipped) == {"fewer than 19 posed frames after it": 4, "no pose": 1}
    assert sorted(LidarOccupancy(rec, with_scans, LidarOccupancySettings(scans=1)).truth) == with_scans[1:]


@needs_kitti
def test_eval_command_on_the_kitti360_sample(tmp_path, capsys):
    from kdbts_ros.core.loading import EMBEDDED_CHECKPOINT

    root = KITTI_SAMPLE / shared_sample.KITTI360_ROOT
    # one scan per frame; every second scan: frames 100 (no pose), 360 and 644
    assert (
        main(
            [
                "eval",
                str(root),
                "--dataset",
                "kitti360",
                "--sequence",
                shared_sample.KITTI360_SEQUENCE,
                "--stride",
                "2",
                "--occ-scans",
                "1",
                "--model",
                f"KDBTS={EMBEDDED_CHECKPOINT}",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "occupancy ground truth (1 scans) for 2 of 3 frames; skipped: 1 no pose" in capsys.readouterr().out
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["occupancy"]["frames"] == 2
    sv, mv = report["results"]["KDBTS (SV)"], report["results"]["KDBTS (MV)"]
    assert sv["frames"] == 3 and mv["frames"] == 2  # the MV head skips frame 100: no pose
    for r in (sv, mv):
        assert r["occupancy_frames"] == 2
        # the embedded network sees through KITTI odometry's camera, 29 deg high against KITTI-360's 37: the
        # ground within about 6 m is outside its view, where the protocol counts every point occupied, so
        # the hidden empty points there are all missed
        assert 0.0 < r["o_acc"] < 1.0 and 0.0 <= r["ie_acc"] < 0.5
        assert np.isnan(r["ie_rec"])  # one scan: every hidden point is occupied, no hidden empty point to recall
    assert "| KDBTS (MV) |" in (tmp_path / "results.md").read_text()


def test_a_constant_depth_prior_scores_as_a_network_with_a_wall_at_that_depth(drive):
    from kdbts_ros.evaluation.priors import ConstantDepth

    ev = RealDepthEvaluator(
        load_kitti360_sequence(drive, SEQ), RealDepthSettings(stride=2), occupancy=LidarOccupancySettings()
    )
    prior = ev.run_prior(ConstantDepth(7.5))
    wall = ev.run(slab_model(7.5), "sv", CanonicalCamera.from_normalised(KITTI_360, 192, 64), progress=False)
    assert prior["occupancy_frames"] == wall["occupancy_frames"] == 2
    for key in ("o_acc", "ie_acc", "ie_rec"):
        assert prior[key] == pytest.approx(wall[key], abs=0.01), key
    # the rendered wall lies a sample spacing behind 7.5 m at most: depth errors nearly equal
    assert prior["abs_rel"] == pytest.approx(wall["abs_rel"], rel=0.05)
