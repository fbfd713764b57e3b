"""The camera-shape benchmark: the cameras it makes, its agreement metric, and ``kdbts eval --camera-shapes``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import KITTI_SAMPLE, needs_kitti, raw_drive_eval_args, slab_model

from kdbts_ros.commands.cli import main
from kdbts_ros.core.camera import ray_pixel_intrinsics
from kdbts_ros.core.frames import Frame
from kdbts_ros.core.lens import Lens, resampler
from kdbts_ros.core.model.checkpoint import save_checkpoint
from kdbts_ros.data import shared_sample
from kdbts_ros.data.records import read_velodyne
from kdbts_ros.evaluation.camera_shapes import (
    ShapeScores,
    agreement,
    crop,
    fisheye,
    made_cameras,
    markdown,
    plumb_bob,
    summary,
)
from kdbts_ros.evaluation.metrics import depth_metrics
from kdbts_ros.evaluation.real_depth import crop_mask, velodyne_depth
from kdbts_ros.runtime.config import RunnerConfig
from kdbts_ros.runtime.runner import FrameRunner

# KITTI raw 2011-09-26's rectified left colour camera
FULL = Lens.pinhole(np.array([[721.5377, 0, 609.5593], [0, 721.5377, 172.854], [0, 0, 1]]), 1242, 375)


def smooth_image() -> np.ndarray:
    """Slowly varying colours: resampling it twice costs only interpolation error."""
    v, u = np.mgrid[0 : FULL.height, 0 : FULL.width].astype(np.float64)
    rgb = [128 + 100 * np.sin(u / 37.0 + k) * np.cos(v / 23.0 - k) for k in range(3)]
    return np.clip(np.stack(rgb, -1), 0, 255).astype(np.uint8)


def test_a_crop_is_the_full_frame_shifted_around_the_principal_point():
    cam = crop("c", FULL, 500, 375)
    x0, y0 = cam.origin
    assert (x0, y0) == (round(609.5593 - 250), 0)
    np.testing.assert_allclose(cam.lens.K, FULL.K - np.array([[0, 0, x0], [0, 0, y0], [0, 0, 0]]))
    image = smooth_image()
    np.testing.assert_array_equal(cam.image(image), image[:, x0 : x0 + 500])
    # a ray lands on the same scene pixel in both cameras
    rays = np.array([[0.1, -0.05, 1.0], [-0.3, 0.2, 1.0]])
    np.testing.assert_allclose(cam.lens.project(rays)[0] + [x0, y0], FULL.project(rays)[0])
    with pytest.raises(ValueError, match="does not fit"):
        crop("too wide", FULL, 1300, 375)


def test_the_benchmark_cameras_have_the_stated_shapes():
    cams = {c.name: c.lens for c in made_cameras(FULL)}
    assert (cams["crop 4:3"].width, cams["crop 16:9"].width) == (500, 667)
    narrow = cams["crop 60 deg"]
    fov = math.degrees(math.atan(narrow.width / 2 / narrow.K[0, 0]) * 2)
    assert abs(fov - 60) < 0.1 and narrow.height == FULL.height
    assert cams["plumb_bob"].model == "plumb_bob" and cams["plumb_bob"].D[0] == -0.3
    fish = cams["equidistant"]
    assert fish.model == "equidistant" and fish.K[0, 0] == pytest.approx(0.45 * 721.5377)
    # wider than the full frame: its outer pixels see rays the full frame does not
    assert not FULL.project(fish.unproject(np.array([[0.0, (fish.height - 1) / 2]])))[1][0]


@pytest.mark.parametrize("make", [plumb_bob, fisheye])
def test_a_lens_image_resampled_back_to_the_pinhole_matches_the_original(make):
    cam = make(FULL)
    image = smooth_image()
    distorted = cam.image(image)
    made = resampler(FULL, cam.lens)
    assert not made.valid.all()
    # where the full frame does not see, the made image repeats the full frame's nearest edge pixel (the ray's
    # pixel clipped into the frame: the lenses here fold no ray), as the runtime pads; nothing black invented
    v, u = np.nonzero(~made.valid)
    px = FULL.project(cam.lens.unproject(np.stack([u, v], 1).astype(np.float64)))[0]
    cu = np.clip(np.rint(px[:, 0]), 0, FULL.width - 1).astype(int)
    cv = np.clip(np.rint(px[:, 1]), 0, FULL.height - 1).astype(int)
    outside = np.abs(distorted[v, u].astype(np.int16) - image[cv, cu].astype(np.int16))
    assert np.percentile(outside, 95) <= 6
    back_maps = resampler(cam.lens, FULL)
    back = back_maps(distorted)
    # pixels whose bilinear neighbourhood in the lens image is all content, not the repeated edge outside
    content = cv2.erode(made.valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    x = np.clip(np.rint(back_maps.map_x).astype(int), 0, cam.lens.width - 1)
    y = np.clip(np.rint(back_maps.map_y).astype(int), 0, cam.lens.height - 1)
    ok = back_maps.valid & content[y, x]
    assert ok.mean() > 0.5
    error = np.abs(back.astype(np.int16) - image.astype(np.int16))[ok]
    assert error.mean() < 1.5 and np.percentile(error, 99) <= 6


def test_the_plumb_bob_lens_sees_the_full_frames_edge_on_the_principal_row():
    lens = plumb_bob(FULL).lens
    row = FULL.K[1, 2]
    edge = lens.unproject(np.array([[-0.5, row]]))[0]
    assert edge[0] == pytest.approx(-(609.5593 + 0.5) / 721.5377, abs=1e-5)
    assert abs(edge[1]) < 2e-3  # the tangential terms tilt the row a little


def test_agreement_on_analytic_depths():
    rng = np.random.default_rng(0)
    reference = rng.uniform(2.0, 60.0, (12, 20)).astype(np.float32)
    reference[0, :5] = np.nan  # padding in the reference
    depth = reference.copy()
    depth[3, :4] = np.nan  # padding in the other camera
    assert agreement(depth, reference) == (0.0, 1.0, 12 * 20 - 5 - 4)
    mean, within, n = agreement(1.1 * depth, reference)
    assert mean == pytest.approx(0.1, rel=1e-5) and within == 0.0 and n == 12 * 20 - 9
    whole = rng.uniform(2.0, 60.0, (4, 20))
    mean, within, _ = agreement(np.where(np.arange(20) < 10, 1.02, 1.5) * whole, whole)
    assert mean == pytest.approx(0.26, rel=1e-5) and within == pytest.approx(0.5)
    assert agreement(np.full((2, 2), np.nan), np.ones((2, 2)))[2] == 0


def test_summary_marks_the_targets_either_way():
    def record(agreement: float, abs_rel: float) -> dict[str, float]:
        return {
            "agreement": agreement,
            "within_3pct": 0.9,
            "shared": 0.5,
            "abs_rel": abs_rel,
            "a1": 0.5,
            "full_abs_rel": 0.4,
            "full_a1": 0.5,
        }

    scores = {
        "full frame": ShapeScores([{"abs_rel": 0.4, "a1": 0.5}]),
        "close": ShapeScores([record(0.02, 0.41), record(0.03, 0.43)]),  # means 0.025, 0.42: +5 %
        "better": ShapeScores([record(0.01, 0.36)]),  # -10 %: not within 5 % either
        "apart": ShapeScores([record(0.05, 0.4)]),
    }
    out = summary(scores)
    assert out["full frame"] == {"abs_rel": 0.4, "a1": 0.5, "frames": 1}
    assert out["close"]["agreement"] == pytest.approx(0.025) and out["close"]["frames"] == 2
    assert out["close"]["relative_abs_rel"] == pytest.approx(0.05)
    assert out["close"]["meets_agreement"] and out["close"]["meets_abs_rel"]
    assert out["better"]["meets_agreement"] and not out["better"]["meets_abs_rel"]
    assert not out["apart"]["meets_agreement"] and out["apart"]["meets_abs_rel"]
    table = markdown({"net": out})
    assert "| net | better | 50% | 0.010 | 90% | 0.360 | 0.400 | -10.0% ✗ |" in table


def test_camera_shapes_needs_real_frames(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--camera-shapes", "--model", "x.safetensors"]) == 2
    assert "--camera-shapes needs real frames with velodyne" in capsys.readouterr().err


@needs_kitti
@pytest.mark.integration
def test_eval_camera_shapes_on_one_real_frame(tmp_path, capsys):
    """A wall at camera depth 10 m seen through every camera: the same depth on every shared pixel."""
    model = slab_model(10.0)
    model.available_heads = ["sv"]
    save_checkpoint(tmp_path / "wall.safetensors", model, {"image_height": 64, "image_width": 192})
    out = tmp_path / "shapes"
    args = [
        "eval",
        *raw_drive_eval_args(),
        "--camera-shapes",
        "--stride",
        "10",
        "--out",
        str(out),
        "--model",
        f"wall={tmp_path / 'wall.safetensors'}",
    ]
    assert main(args) == 0
    assert "| wall | crop 4:3 |" in capsys.readouterr().out
    report = json.loads((out / "results.json").read_text())
    assert report["frames"] == 1 and report["cameras"]["crop 4:3"]["crop_origin"] == [360, 0]
    results = report["results"]["wall"]
    for name in ("crop 4:3", "crop 16:9", "crop 60 deg", "plumb_bob", "equidistant"):
        r = results[name]
        assert r["agreement"] < 1e-3 and r["within_3pct"] == 1.0 and 0.1 < r["shared"] <= 1.0
        assert r["abs_rel"] == pytest.approx(r["full_abs_rel"], abs=1e-3) and r["meets_abs_rel"]
    # the full frame's Abs Rel: the wall against the scan projected into the depth camera the report states,
    # on the pixels the runtime sees the full frame in (the slab renders one depth on every ray, near 10 m)
    cfg = RunnerConfig()  # as the benchmark runs it
    cfg.model.checkpoint, cfg.render.depth_scale = str(tmp_path / "wall.safetensors"), 1.0
    blank = Frame(np.zeros((FULL.height, FULL.width, 3), np.uint8), FULL.K, 0, "c")
    wall = FrameRunner(cfg).process(blank, want_grid=False)
    assert wall.depth is not None and np.nanmax(wall.depth) - np.nanmin(wall.depth) < 1e-3
    wall_depth = float(np.nanmedian(wall.depth))
    assert 9.5 < wall_depth < 10.6
    canonical = report["networks"]["wall"]["canonical"]
    Kn = np.array([[canonical["fx"], 0, canonical["cx"]], [0, canonical["fy"], canonical["cy"]], [0, 0, 1]])
    depth_K = ray_pixel_intrinsics(Kn, 192, 64)
    assert wall.depth_lens is not None and not wall.depth_lens.distorted
    np.testing.assert_allclose(wall.depth_lens.K, depth_K)
    frame = next(f for f in shared_sample.raw_sample(KITTI_SAMPLE).frames if f.velodyne is not None)
    gt = velodyne_depth(read_velodyne(frame.velodyne), frame.T_cam_velo(0), depth_K, 192, 64)
    gt[~(crop_mask(64, 192) & np.isfinite(wall.depth))] = np.inf
    want = depth_metrics(gt, np.full(gt.shape, wall_depth))["abs_rel"]
    assert results["full frame"]["abs_rel"] == pytest.approx(want, rel=1e-6)
    assert len(report["pictures"]) == 6  # the full frame and each made camera
    for png in report["pictures"]:
        picture = cv2.imread(str(out / Path(png).name))
        assert picture is not None and picture.shape[1] == 400
