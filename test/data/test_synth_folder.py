"""Tests of the multi-camera rig, the KITTI-style synthetic folder, its bag and ``kdbts synth``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from kdbts_ros.commands.cli import main
from kdbts_ros.core import geometry
from kdbts_ros.core.errors import EXIT_USER
from kdbts_ros.data.rig import R_BASE_OPTICAL, RigConfig, base_trajectory
from kdbts_ros.data.synth_folder import SynthFolder, write_sequence
from kdbts_ros.data.synthetic import SceneConfig, StreetScene
from kdbts_ros.messages import cdr, sensor_data

RIG = RigConfig(width=64, height=24)
SEED, N = 3, 3
SEQ = "seed_0003"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    assert write_sequence(out, SEED, N, RIG, bag=True) == out / SEQ
    return out


@pytest.fixture(scope="module")
def folder(root: Path) -> SynthFolder:
    return SynthFolder(root)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_rig_geometry() -> None:
    cams = {c.name: c.T_base_cam() for c in RIG.cameras}
    assert np.allclose(cams["stereo_left"][:3, :3], R_BASE_OPTICAL)
    T_left_right = geometry.invert(cams["stereo_left"]) @ cams["stereo_right"]
    expected = np.eye(4)
    expected[0, 3] = 0.6  # the right camera sits 0.6 m along the left camera's x (right)
    assert np.allclose(T_left_right, expected)
    # side_left looks to base +y and down 15 degrees; its image x axis points forward (base +x)
    R = cams["side_left"][:3, :3]
    assert np.allclose(R[:, 2], [0.0, np.cos(np.radians(15)), -np.sin(np.radians(15))])
    assert np.allclose(R[:, 0], [1.0, 0.0, 0.0])
    assert np.allclose(cams["side_right"][:3, 2], [0.0, -np.cos(np.radians(15)), -np.sin(np.radians(15))])
    for T in cams.values():
        assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3)) and np.isclose(np.linalg.det(T[:3, :3]), 1.0)


def test_reader_metadata_and_poses(folder: SynthFolder) -> None:
    assert (folder.width, folder.height, folder.period_ns) == (64, 24, 100_000_000)
    assert folder.cameras == ["stereo_left", "stereo_right", "side_left", "side_right"]
    assert folder.sequences == [SEQ] and folder.num_frames(SEQ) == N
    assert np.allclose(folder.K, RIG.K())
    assert np.allclose(folder.T_base_cam, [c.T_base_cam() for c in RIG.cameras])
    poses = base_trajectory(N, seed=SEED)
    assert np.array_equal(folder.poses(SEQ), poses)  # %.17g round trips exactly
    assert np.allclose(folder.cam_to_world(SEQ, 2, 1), poses[1] @ RIG.cameras[2].T_base_cam())
    assert folder.scene(SEQ).config == SceneConfig(seed=SEED, length_m=120.0)


def test_images_and_depth_match_direct_render(folder: SynthFolder) -> None:
    scene = StreetScene(SceneConfig(seed=SEED, length_m=120.0))
    poses, K = base_trajectory(N, seed=SEED), RIG.K()
    saw_sky = False
    for f in range(N):
        for c, cam in enumerate(RIG.cameras):
            rgb, depth = scene.render(poses[f] @ cam.T_base_cam(), K, RIG.width, RIG.height)
            assert np.array_equal(folder.image(SEQ, c, f), rgb)
            d = folder.depth(SEQ, c, f)
            assert d.dtype == np.float32 and d.shape == (RIG.height, RIG.width)
            near = np.isfinite(depth) & (depth < 250.0)
            assert np.all(np.abs(d[near] - depth[near]) <= 1.0 / 256)
            assert np.all(np.isinf(d[np.isinf(depth)]))
            saw_sky |= bool(np.isinf(depth).any())
    assert saw_sky


def test_side_camera_depth_lies_on_surfaces(folder: SynthFolder) -> None:
    scene, cam, frame = folder.scene(SEQ), 2, 1
    depth, T, K = folder.depth(SEQ, cam, frame), folder.cam_to_world(SEQ, cam, frame), folder.K
    # interior pixels of a surface (3x3 neighbourhood finite and near-equal): no grazing box edges
    pad = np.pad(depth, 1, constant_values=np.inf)
    nb = np.stack(
        [
            pad[1 + dv : 1 + dv + depth.shape[0], 1 + du : 1 + du + depth.shape[1]]
            for dv in (-1, 0, 1)
            for du in (-1, 0, 1)
        ]
    )
    ok = np.isfinite(nb).all(0) & (np.ptp(np.where(np.isfinite(nb), nb, 0), 0) < 0.05 * depth) & (depth < 50)
    v, u = np.nonzero(ok)
    assert len(v) >= 5
    pick = np.linspace(0, len(v) - 1, 8).astype(int)
    u, v, z = u[pick].astype(float), v[pick].astype(float), depth[v[pick], u[pick]].astype(float)
    cam_pts = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
    pts = cam_pts @ T[:3, :3].T + T[:3, 3]
    rays = pts - T[:3, 3]
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    assert scene.occupied(pts + 0.05 * rays).all()
    assert not scene.occupied(pts - 0.05 * rays).any()


def test_rewrite_is_byte_identical(root: Path, tmp_path: Path) -> None:
    write_sequence(tmp_path, SEED, N, RIG, bag=True)
    assert _files(tmp_path) == _files(root)


def test_bag_topics_counts_and_camera_info(root: Path) -> None:
    with Reader(root / SEQ / "bag") as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        expected = {"/tf_static": 1, "/tf": N}
        for cam in RIG.cameras:
            expected[f"/{cam.name}/image_raw"] = N
            expected[f"/{cam.name}/camera_info"] = N
        assert counts == expected
        infos = [(conn, raw) for conn, _, raw in reader.messages() if conn.topic == "/side_left/camera_info"]
        static = next(raw for conn, _, raw in reader.messages() if conn.topic == "/tf_static")
        first_tf = next(raw for conn, _, raw in reader.messages() if conn.topic == "/tf")
    info = cdr.deserialize(infos[0][1], "sensor_msgs/msg/CameraInfo")
    lens = sensor_data.camera_info_lens(info, rectified=False).lens
    assert (
        np.allclose(lens.K, RIG.K())
        and (lens.width, lens.height) == (64, 24)
        and not lens.distorted
        and info.header.frame_id == "side_left_optical"
    )
    tfs = sensor_data.tf_transforms(cdr.deserialize(static, "tf2_msgs/msg/TFMessage"))
    assert [(p, c) for p, c, *_ in tfs] == [("base_link", f"{c.name}_optical") for c in RIG.cameras]
    assert np.allclose(tfs[2][3], RIG.cameras[2].T_base_cam())
    ((parent, child, stamp, T, _),) = sensor_data.tf_transforms(cdr.deserialize(first_tf, "tf2_msgs/msg/TFMessage"))
    assert (parent, child, stamp) == ("odom", "base_link", 1_700_000_000 * 10**9)
    assert np.allclose(T, base_trajectory(N, seed=SEED)[0])


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main(["synth", str(tmp_path), "--seed-range", "5", "7", "--frames", "2", "--width", "32", "--height", "16"])
        == 0
    )
    assert "seed_0005" in capsys.readouterr().out
    folder = SynthFolder(tmp_path)
    assert folder.sequences == ["seed_0005", "seed_0006"] and folder.num_frames("seed_0006") == 2
    assert folder.image("seed_0005", 3, 1).shape == (16, 32, 3)
    assert not (tmp_path / "seed_0005" / "bag").exists()
    # a different rig in the same root is refused instead of mixing geometries
    assert main(["synth", str(tmp_path), "--seeds", "1", "--frames", "1", "--width", "48"]) == EXIT_USER


def test_errors_name_the_file(root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        SynthFolder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=re.escape("rig.json")):
        SynthFolder(tmp_path)
    (tmp_path / "rig.json").write_text("{not json")
    with pytest.raises(ValueError, match=re.escape("rig.json")):
        SynthFolder(tmp_path)
    write_sequence(tmp_path / "copy", SEED, 1, RIG)
    folder = SynthFolder(tmp_path / "copy")
    bad = tmp_path / "copy" / SEQ / "image_01" / "000000.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        folder.image(SEQ, 1, 0)
    (tmp_path / "copy" / SEQ / "depth_02" / "000000.png").unlink()
    with pytest.raises(FileNotFoundError, match="depth_02"):
        folder.depth(SEQ, 2, 0)
    with pytest.raises(IndexError):
        folder.image(SEQ, 0, 5)
    (tmp_path / "copy" / SEQ / "poses.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match=re.escape("poses.txt")):
        SynthFolder(tmp_path / "copy").poses(SEQ)
