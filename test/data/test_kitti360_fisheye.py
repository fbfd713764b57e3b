"""KITTI-360 fisheyes as virtual pinholes: maps against the MEI projection, a rendered round trip, loader, bag."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import KITTI_SAMPLE, needs_kitti
from test_kitti_bag import read_bag, tf_buffer

from kdbts_ros.commands.cli import main
from kdbts_ros.core.lens import CanonicalCamera, Lens, Resampler, resampler
from kdbts_ros.data import shared_sample
from kdbts_ros.data.fisheye import MeiCamera, Rotated, read_mei_yaml, virtual_rotation
from kdbts_ros.data.kitti360 import Kitti360Calibration, load_kitti360_sequence
from kdbts_ros.data.records import DatasetError, RecordingFrames
from kdbts_ros.messages import sensor_data
from kdbts_ros.training.samples import TrainingFrames

# a moderate fisheye (about 64 deg half field of view) whose distortion the test can invert by iteration
FISH = MeiCamera(
    "image_02", 160, 160, xi=1.6, k1=0.05, k2=0.02, p1=2e-4, p2=-1e-4, gamma1=180.0, gamma2=181.0, u0=80.3, v0=79.6
)
K_VIRTUAL = np.array([[35.0, 0, 59.5], [0, 35.0, 44.5], [0, 0, 1]])  # wide: its corners see past the fisheye
SIZE = (120, 90)
VIRTUAL = Lens.pinhole(K_VIRTUAL, *SIZE)
PLANE_Z, SQUARE = 2.0, 0.6  # a checkerboard plane 2 m ahead of the fisheye, 0.6 m squares
SEQ = "2013_05_28_drive_0000_sync"


def R_x(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def lift(mei: MeiCamera, uv: np.ndarray) -> np.ndarray:
    """Rays of fisheye pixels: undistort by fixed-point iteration, then the unified model's closed-form lift."""
    xd, yd = (uv[:, 0] - mei.u0) / mei.gamma1, (uv[:, 1] - mei.v0) / mei.gamma2
    x, y = xd.copy(), yd.copy()
    for _ in range(100):
        r2 = x * x + y * y
        radial = 1 + mei.k1 * r2 + mei.k2 * r2 * r2
        x = (xd - 2 * mei.p1 * x * y - mei.p2 * (r2 + 2 * x * x)) / radial
        y = (yd - mei.p1 * (r2 + 2 * y * y) - 2 * mei.p2 * x * y) / radial
    r2 = x * x + y * y
    f = (mei.xi + np.sqrt(1 + (1 - mei.xi**2) * r2)) / (r2 + 1)
    return np.stack([f * x, f * y, f - mei.xi], axis=1)


def checkerboard(rays: np.ndarray) -> np.ndarray:
    """Grey value (60 or 200) of the plane square each ray hits; 120 for rays that never reach the plane."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = PLANE_Z / rays[:, 2]
        X, Y = t * rays[:, 0], t * rays[:, 1]
    dark = (np.floor(X / SQUARE) + np.floor(Y / SQUARE)) % 2 == 0
    return np.where(rays[:, 2] > 0.05, np.where(dark, 60, 200), 120).astype(np.uint8)


def smooth(rays: np.ndarray) -> np.ndarray:
    """A smooth pattern on the plane (float32), for sub-pixel comparisons."""
    t = PLANE_Z / np.maximum(rays[:, 2], 0.05)
    X, Y = t * rays[:, 0], t * rays[:, 1]
    return (128 + 100 * np.sin(X * 2.0) * np.cos(Y * 1.5)).astype(np.float32)


def render_fisheye(mei: MeiCamera, pattern) -> np.ndarray:
    """The fisheye image of the plane: each pixel centre's lifted ray through ``pattern``."""
    u, v = np.meshgrid(np.arange(mei.width, dtype=float), np.arange(mei.height, dtype=float))
    return pattern(lift(mei, np.c_[u.ravel(), v.ravel()])).reshape(mei.height, mei.width)


def pinhole_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H * W, 3) rays K^-1 [u, v, 1] of every pixel centre, row by row."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    return np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1) @ np.linalg.inv(K).T


def render_virtual(R: np.ndarray, pattern) -> np.ndarray:
    """The virtual pinhole's own image of the plane (its rays turned into the fisheye frame by R)."""
    return pattern(pinhole_rays(K_VIRTUAL, *SIZE) @ R.T).reshape(SIZE[1], SIZE[0])


def fisheye_view(mei: MeiCamera, R: np.ndarray, virtual: Lens = VIRTUAL) -> Resampler:
    """The resampling of the fisheye into the virtual pinhole turned by R, one sample at each pixel's centre (the
    loader averages more where the fisheye is denser than the view: its maps are those of a finer pinhole)."""
    return resampler(Rotated(mei, R), virtual, max_factor=1)


def test_lift_inverts_the_mei_projection():
    uv = np.array([[3.0, 5.0], [80.0, 80.0], [150.5, 20.25], [159.0, 159.0]])
    np.testing.assert_allclose(FISH.pixels(lift(FISH, uv)), uv, atol=1e-6)
    assert FISH.project(lift(FISH, uv))[1].all()


def test_official_rotation_pitches_the_virtual_camera_down_and_mirrors_yaw():
    R = virtual_rotation(0.0, -15.0)
    # the virtual optical axis in the fisheye frame: 15 deg towards +y (down in an optical frame)
    np.testing.assert_allclose(R @ [0, 0, 1], [0, np.sin(np.radians(15)), np.cos(np.radians(15))], atol=1e-12)
    np.testing.assert_allclose(R, R_x(-15.0), atol=1e-12)
    # scipy's extrinsic "xy": first about x, then about the fixed y axis
    yaw = virtual_rotation(20.0, 0.0)
    np.testing.assert_allclose(yaw @ [0, 0, 1], [np.sin(np.radians(20)), 0, np.cos(np.radians(20))], atol=1e-12)
    np.testing.assert_allclose(virtual_rotation(20.0, -15.0), yaw @ R, atol=1e-12)


def test_maps_name_the_mei_projection_of_each_virtual_ray():
    R = virtual_rotation(10.0, -15.0)
    maps = fisheye_view(FISH, R)
    assert maps.map_x.shape == maps.map_y.shape == maps.valid.shape == (SIZE[1], SIZE[0])
    assert maps.map_x.dtype == np.float32
    rng = np.random.default_rng(1)
    u, v = rng.integers(0, SIZE[0], 400), rng.integers(0, SIZE[1], 400)
    rays = (R @ np.linalg.inv(K_VIRTUAL) @ np.stack([u, v, np.ones(400)])).T
    expected = FISH.pixels(rays)
    # seen: the ray lands on the fisheye image, up to its pixels' outer edges
    inside = np.all((expected >= -0.5) & (expected <= [FISH.width - 0.5, FISH.height - 0.5]), axis=1)
    assert 50 < inside.sum() < 400  # the sample has pixels on both sides of the fisheye's edge
    assert np.array_equal(maps.valid[v, u], inside)
    np.testing.assert_allclose(np.c_[maps.map_x[v, u], maps.map_y[v, u]][inside], expected[inside], atol=1e-3)
    # an unseen pixel samples the fisheye image's edge (its nearest pixels are repeated there)
    edge = np.c_[maps.map_x[v, u], maps.map_y[v, u]][~inside]
    on_edge = np.isclose(edge, -0.5, atol=1e-3) | np.isclose(edge, [FISH.width - 0.5, FISH.height - 0.5], atol=1e-3)
    assert on_edge.any(axis=1).all()


def test_rays_the_model_cannot_map_are_outside():
    # looking backwards (135 deg off axis) is beyond the mirror's horizon z > -1/xi; distortion turning
    # back (k2 < 0) would fold far rays onto near pixels
    folding = MeiCamera("f", 400, 400, xi=1.6, k1=0.0, k2=-5.0, p1=0, p2=0, gamma1=100, gamma2=100, u0=200, v0=200)
    rays = np.array([[0, 0, 1.0], [1, 0, -1.0], [np.sin(1.2), 0, np.cos(1.2)], [1, 0, 1.0]])
    assert FISH.valid(rays).tolist() == [True, False, True, True]
    # d/dr of r (1 - 5 r^4) is 1 - 25 r^4; r = sin / (cos + xi) is 0.475 at 1.2 rad, 0.307 at 45 deg
    assert folding.valid(rays).tolist() == [True, False, False, True]
    K = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1]])
    maps = fisheye_view(folding, np.eye(3), Lens.pinhole(K, 4, 1))  # rays (0|1|2|3, 0, 1): 0, 45, 63, 72 deg
    assert maps.map_x[0, 0] == pytest.approx(200) and 200 < maps.map_x[0, 1] < 400
    # 72 deg would land inside the image (r_d = 0.35), but on a pixel that nearer rays already map to
    assert folding.pixels(np.array([[3.0, 0, 1]]))[0, 0] < 400
    assert maps.valid.tolist() == [[True, True, True, False]]


def test_resampled_checkerboard_matches_the_virtual_cameras_own_view():
    R = virtual_rotation(10.0, -15.0)
    fisheye = render_fisheye(FISH, checkerboard)
    maps = fisheye_view(FISH, R)
    out = maps(fisheye)
    direct = render_virtual(R, checkerboard)
    valid = maps.valid
    assert 0.05 < 1 - valid.mean() < 0.5  # the rotated view reaches past the fisheye's corner
    # unseen pixels repeat the fisheye image's edge (blends of its squares), never a black border
    assert np.all((out[~valid] >= 60) & (out[~valid] <= 200))
    # where the 4 fisheye pixels around the source agree, the remap gives exactly the square the ray hits
    x0, y0 = np.floor(maps.map_x[valid]).astype(int), np.floor(maps.map_y[valid]).astype(int)
    x0, y0 = np.clip(x0, 0, FISH.width - 1), np.clip(y0, 0, FISH.height - 1)
    x1, y1 = np.minimum(x0 + 1, FISH.width - 1), np.minimum(y0 + 1, FISH.height - 1)
    corners = np.stack([fisheye[y0, x0], fisheye[y0, x1], fisheye[y1, x0], fisheye[y1, x1]])
    agree = np.all(corners == corners[0], axis=0)
    assert agree.mean() > 0.7
    assert np.mean(out[valid][agree] == direct[valid][agree]) > 0.995
    # and the view is no copy of the unrotated one
    assert np.mean(render_virtual(np.eye(3), checkerboard)[valid] == direct[valid]) < 0.8


def test_resampled_smooth_pattern_has_sub_pixel_accuracy():
    R = virtual_rotation(0.0, -15.0)
    maps = fisheye_view(FISH, R)
    fisheye, direct = render_fisheye(FISH, smooth), render_virtual(R, smooth)
    error = np.abs(maps(fisheye) - direct)[maps.valid]
    # bilinear interpolation errs by a fraction of a grey level (a few near the rim, where the plane stretches)
    assert error.mean() < 0.5 and np.percentile(error, 99) < 3.0
    # maps half a fisheye pixel off would fail that
    shifted = Resampler(maps.map_x + 0.5, maps.map_y, maps.valid)
    assert np.abs(shifted(fisheye) - direct)[maps.valid].mean() > 1.5


@needs_kitti
def test_official_views_of_the_real_calibration_look_sideways_and_down_inside_the_fisheye():
    calib = Kitti360Calibration(KITTI_SAMPLE / shared_sample.KITTI360_ROOT / "calibration")
    for name, side in (("image_02", -1), ("image_03", 1)):
        cam = calib.camera(name)
        np.testing.assert_allclose(cam.K, calib.camera("image_00").K)
        axis = cam.T_base_cam[:3, 2]  # the optical axis in base_link: x forward, y left, z up
        assert -axis[1] * side > 0.95 and -axis[2] == pytest.approx(np.sin(np.radians(15)), abs=0.03)
        # the narrow official crop (BTS issue #29) lies wholly inside the 1400x1400 fisheye image
        assert cam.resampling is not None and cam.resampling.valid.shape == (376, 1408) and cam.resampling.valid.all()


# ---------------------------------------------------------------- a generated KITTI-360 folder


def mei_yaml(mei: MeiCamera) -> str:
    """OpenCV-style YAML as KITTI-360 ships ``image_02.yaml``."""
    return (
        f"%YAML:1.0\nmodel_type: MEI\ncamera_name: {mei.name}\nimage_width: {mei.width}\n"
        f"image_height: {mei.height}\nmirror_parameters:\n   xi: {mei.xi!r}\ndistortion_parameters:\n"
        f"   k1: {mei.k1!r}\n   k2: {mei.k2!r}\n   p1: {mei.p1!r}\n   p2: {mei.p2!r}\n"
        f"projection_parameters:\n   gamma1: {mei.gamma1!r}\n   gamma2: {mei.gamma2!r}\n"
        f"   u0: {mei.u0!r}\n   v0: {mei.v0!r}\n"
    )


K00 = np.array([[40.0, 0, 31.5], [0, 40.0, 11.5], [0, 0, 1]])
K00_LENS = Lens.pinhole(K00, 64, 24)
# unrectified camera -> pose rows of the real calib_cam_to_pose.txt (02 looks left, 03 right)
CAM_TO_POSE = {
    "image_00": "0.0371783278 -0.0986182135 0.9944306009 1.5752681039 0.9992675562 -0.0053553387 -0.0378902567 "
    "0.0043914093 0.0090621821 0.9951109327 0.0983468786 -0.6500000000",
    "image_01": "0.0194000864 -0.1051529641 0.9942668106 1.5977241400 0.9997374956 -0.0100836652 -0.0205732716 "
    "0.5981494900 0.0121891942 0.9944049345 0.1049297370 -0.6488433108",
    "image_02": "0.9995185086 0.0041276589 -0.0307524527 0.7264036936 -0.0307926666 0.0100608424 -0.9994751579 "
    "-0.1499658517 -0.0038160970 0.9999408692 0.0101830998 -1.0686400091",
    "image_03": "-0.9996821702 0.0005703407 -0.0252038325 0.7016842127 -0.0252033830 0.0007820814 0.9996820384 "
    "0.7463650950 0.0005898709 0.9999995315 -0.0007674583 -1.0751978255",
}


def write_kitti360(root: Path, n: int = 3) -> None:
    """A KITTI-360 sequence: perspective 00/01 (64x24), fisheyes 02/03 (the FISH model), n frames driving along x."""
    cal = root / "calibration"
    cal.mkdir(parents=True)
    fmt = lambda a: " ".join(f"{v:.10e}" for v in np.ravel(a))  # noqa: E731
    lines = []
    for k, tx in (("00", 0.0), ("01", -40.0 * 0.6)):
        lines += [f"P_rect_{k}: {fmt(np.c_[K00, [tx, 0, 0]])}", f"R_rect_{k}: {fmt(np.eye(3))}", f"S_rect_{k}: 64 24"]
    (cal / "perspective.txt").write_text("\n".join(lines) + "\n")
    (cal / "calib_cam_to_pose.txt").write_text("".join(f"{c}: {row}\n" for c, row in CAM_TO_POSE.items()))
    (cal / "calib_cam_to_velo.txt").write_text(fmt(np.eye(4)[:3]) + "\n")
    for name in ("image_02", "image_03"):
        (cal / f"{name}.yaml").write_text(mei_yaml(replace(FISH, name=name)))
    fisheye = cv2.cvtColor(render_fisheye(FISH, checkerboard), cv2.COLOR_GRAY2BGR)
    seq = root / "data_2d_raw" / SEQ
    for cam, folder in (
        ("image_00", "data_rect"),
        ("image_01", "data_rect"),
        ("image_02", "data_rgb"),
        ("image_03", "data_rgb"),
    ):
        (seq / cam / folder).mkdir(parents=True)
        (seq / cam / "timestamps.txt").write_text("".join(f"2013-05-28 08:46:02.{i}00000000\n" for i in range(n)))
        for i in range(n):
            img = fisheye if folder == "data_rgb" else np.full((24, 64, 3), 20 * i, np.uint8)
            cv2.imwrite(str(seq / cam / folder / f"{i:010d}.png"), img)
    poses = np.tile(np.eye(4)[:3], (n, 1, 1))
    poses[:, 0, 3] = np.arange(n)
    (root / "data_poses" / SEQ).mkdir(parents=True)
    np.savetxt(root / "data_poses" / SEQ / "poses.txt", np.c_[np.arange(n), poses.reshape(n, 12)])


def T_base(name: str) -> np.ndarray:
    """A camera on base_link: its calib_cam_to_pose row, the pose frame (y right, z down) turned to y left, z up."""
    T = np.eye(4)
    T[:3] = np.array(CAM_TO_POSE[name].split(), float).reshape(3, 4)
    return np.diag([1.0, -1.0, -1.0, 1.0]) @ T


def test_loader_serves_the_fisheyes_as_rotated_virtual_pinholes(tmp_path):
    write_kitti360(tmp_path)
    rec = load_kitti360_sequence(tmp_path, SEQ)  # every camera folder present: 00, 01 and the fisheyes
    assert [c.name for c in rec.rig.cameras] == ["image_00", "image_01", "image_02", "image_03"]
    left, right = rec.rig.cameras[2], rec.rig.cameras[3]
    assert (left.frame_id, left.width, left.height) == ("kitti360_cam_02", 64, 24)
    np.testing.assert_allclose(left.K, K00)
    pitch = np.eye(4)
    pitch[:3, :3] = R_x(-15.0)
    np.testing.assert_allclose(left.T_base_cam, T_base("image_02") @ pitch, atol=1e-12)
    np.testing.assert_allclose(right.T_base_cam, T_base("image_03") @ pitch, atol=1e-12)  # yaw 0: mirrored 0
    # a frame reads as the pinhole view: the raw fisheye file resampled with the maps of K00 and the pitch
    raw = cv2.cvtColor(cv2.imread(str(rec.frames[1].images[2])), cv2.COLOR_BGR2RGB)
    expected = resampler(
        Rotated(read_mei_yaml(tmp_path / "calibration/image_02.yaml"), R_x(-15.0)), Lens.pinhole(K00, 64, 24)
    )(raw)
    img = rec.frames[1].image(2)
    assert img.shape == (24, 64, 3) and img.any()
    np.testing.assert_array_equal(img, expected)
    # a yaw turns the right camera the other way
    turned = load_kitti360_sequence(tmp_path, SEQ, ["image_02", "image_03"], fisheye_rotation=(20.0, 0.0))
    T_02, T_03 = (
        np.linalg.inv(T_base(c)) @ cam.T_base_cam for c, cam in zip(("image_02", "image_03"), turned.rig.cameras)
    )
    assert T_02[0, 2] == pytest.approx(np.sin(np.radians(20))) and T_03[0, 2] == pytest.approx(-np.sin(np.radians(20)))


def test_fisheye_cameras_join_training_samples(tmp_path):
    write_kitti360(tmp_path)
    frames = RecordingFrames([load_kitti360_sequence(tmp_path, SEQ)], camera=CanonicalCamera.of(K00_LENS, 32, 12))
    assert frames.cameras == ["image_00", "image_01", "image_02", "image_03"]
    sample = TrainingFrames(frames, side_offset=1)[0]
    assert tuple(sample["images"].shape) == (8, 3, 12, 32)
    # frames 4-7 are the fisheye views (at t + 1, t + 2): resampled plane, not the uniform perspective frames
    assert sample["images"][4:].std() > 0.1 and sample["images"][:4].std(dim=(1, 2, 3)).max() < 1e-6
    # the fisheye frames come from the raw fisheye image in one resampling, the loader's virtual camera turned
    fish = frames.record(SEQ, 1).recorded_image(2, colour=True)
    direct = resampler(Rotated(FISH, R_x(-15.0)), frames.camera.lens())(fish)
    np.testing.assert_allclose(sample["images"][4].permute(1, 2, 0).numpy() * 255, direct, atol=1e-3)


def test_training_frames_mark_the_training_cameras_padding(tmp_path):
    write_kitti360(tmp_path)
    camera = CanonicalCamera.from_normalised((0.8, 2.0, 0.1, 0.0), 40, 16)  # wider than camera 00 sees
    frames = RecordingFrames([load_kitti360_sequence(tmp_path, SEQ, ["image_00", "image_01"])], camera=camera)
    sample = TrainingFrames(frames, side_offset=1)[0]
    assert tuple(sample["images"].shape) == (4, 3, 16, 40) and sample["valid"].shape == (4, 16, 40)
    np.testing.assert_allclose(sample["Kn"][0].numpy(), camera.Kn, atol=1e-7)
    # a training pixel is seen where its ray (network convention: pixel i at (2 i + 1) / W - 1) lands on K00's image
    v, u = np.mgrid[0:16, 0:40]
    x, y = ((2 * u + 1) / 40 - 1 - 0.1) / 0.8, ((2 * v + 1) / 16 - 1) / 2.0
    pu, pv = 40 * x + 31.5, 40 * y + 11.5
    inside = (pu >= -0.5) & (pu <= 63.5) & (pv >= -0.5) & (pv <= 23.5)
    assert 0.2 < inside.mean() < 0.9
    for k in range(4):
        np.testing.assert_array_equal(sample["valid"][k].numpy(), inside)


def test_a_fisheye_image_of_another_size_is_named(tmp_path):
    write_kitti360(tmp_path)
    cv2.imwrite(
        str(tmp_path / "data_2d_raw" / SEQ / "image_03" / "data_rgb" / "0000000001.png"),
        np.zeros((100, 160, 3), np.uint8),
    )
    rec = load_kitti360_sequence(tmp_path, SEQ, ["image_03"])
    with pytest.raises(DatasetError, match=re.escape("0000000001.png is 160x100 but the calibration says 160x160")):
        rec.frames[1].image(0)
    (tmp_path / "calibration" / "image_03.yaml").unlink()
    with pytest.raises(DatasetError, match=re.escape("image_03.yaml")):
        load_kitti360_sequence(tmp_path, SEQ, ["image_03"])


def test_kitti2bag_writes_the_chosen_fisheye_as_a_pinhole_camera(tmp_path, capsys):
    write_kitti360(tmp_path / "k360")
    out = tmp_path / "bag"
    assert (
        main(
            [
                "kitti2bag",
                "kitti360",
                str(tmp_path / "k360"),
                str(out),
                "--sequence",
                SEQ,
                "--cameras",
                "image_00",
                "image_02",
                "--no-velodyne",
            ]
        )
        == 0
    )
    assert "image_02 -> kitti360_cam_02" in capsys.readouterr().out
    msgs, _ = read_bag(out)
    topics = {t for t, _, _ in msgs}
    # --cameras chose 00 and 02 only (no 01, 03), --no-velodyne leaves out the scans
    assert topics == {
        "/kitti360/cam_00/image_rect",
        "/kitti360/cam_00/camera_info",
        "/kitti360/cam_02/image_rect",
        "/kitti360/cam_02/camera_info",
        "/tf",
        "/tf_static",
        "/clock",
    }
    info = next(m for t, _, m in msgs if t == "/kitti360/cam_02/camera_info")
    np.testing.assert_allclose(np.array(info.k).reshape(3, 3), K00)
    np.testing.assert_allclose(np.array(info.p).reshape(3, 4), np.c_[K00, np.zeros(3)])
    assert (info.width, info.height, info.header.frame_id) == (64, 24, "kitti360_cam_02") and not np.any(info.d)
    rec = load_kitti360_sequence(tmp_path / "k360", SEQ, ["image_00", "image_02"])
    images = [m for t, _, m in msgs if t == "/kitti360/cam_02/image_rect"]
    assert len(images) == 3 and images[2].encoding == "rgb8"
    np.testing.assert_array_equal(sensor_data.image_to_rgb(images[2]), rec.frames[2].image(1))
    buf = tf_buffer(msgs)
    f = rec.frames[2]
    np.testing.assert_allclose(buf.lookup("world", "kitti360_cam_02", f.stamp_ns), f.T_world_cam(1), atol=1e-6)
