"""Lenses and the canonical camera: projections against OpenCV's, fold-back limits, resampling maps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kdbts_ros.core.lens import CanonicalCamera, Lens, LensError, depth_in, normalise_intrinsics, resampler

K = np.array([[700.0, 0.0, 620.0], [0.0, 690.0, 180.0], [0.0, 0.0, 1.0]])
LENSES = {
    "plumb_bob": np.array([-0.3, 0.1, 0.001, -0.002, 0.0]),
    "rational_polynomial": np.array([-0.3, 0.08, 0.001, 0.001, 0.0, 0.01, 0.0, 0.0]),
    "equidistant": np.array([0.1, -0.02, 0.003, -0.001]),
}


@pytest.mark.parametrize("model", list(LENSES))
def test_projection_is_opencvs_and_unprojection_inverts_it(model: str, rng: np.random.Generator) -> None:
    lens = Lens(1240, 370, K, LENSES[model], model)
    pixels = np.stack([rng.uniform(0, 1239, 500), rng.uniform(0, 369, 500)], 1)
    rays = lens.unproject(pixels)
    uv, seen = lens.project(rays)
    assert seen.all() and np.abs(uv - pixels).max() < 1e-6
    project = cv2.fisheye.projectPoints if model == "equidistant" else cv2.projectPoints
    ref = project(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, LENSES[model])[0].reshape(-1, 2)
    assert np.abs(ref - uv).max() < 1e-6


def test_rays_beyond_the_fold_of_a_strong_barrel_are_not_seen() -> None:
    # r (1 - 0.35 r^2) rises up to r = 1 / sqrt(1.05); farther rays land back on nearer pixels
    lens = Lens(4000, 4000, np.array([[1000.0, 0, 2000], [0, 1000, 2000], [0, 0, 1]]), np.array([-0.35]))
    limit = 1 / np.sqrt(1.05)
    rays = np.array([[limit - 0.01, 0, 1], [limit + 0.01, 0, 1], [1.3, 0, 1]])
    uv, seen = lens.project(rays)
    assert seen.tolist() == [True, False, False]
    assert 2000 < uv[2, 0] < uv[0, 0]  # the folded ray would have sampled a pixel inside the image


def test_a_lens_refuses_what_it_cannot_describe() -> None:
    with pytest.raises(LensError, match="not supported"):
        Lens(10, 10, K, np.array([0.1, 0.0, 0.0, 0.0]), "double_sphere")
    with pytest.raises(LensError, match="takes 4"):
        Lens(10, 10, K, np.zeros(5) + 0.1, "equidistant")
    with pytest.raises(LensError, match="focal"):
        Lens(10, 10, np.zeros((3, 3)))
    assert Lens(10, 10, K, np.zeros(5)) == Lens.pinhole(K, 10, 10)  # zero distortion is no distortion


def test_a_crop_is_resampled_to_its_own_pixels_and_padding_is_marked() -> None:
    full = Lens.pinhole(K, 1240, 370)
    # a 4:3 crop keeping the principal point: columns 373..866 of the full image
    crop_K = K.copy()
    crop_K[0, 2] -= 373
    crop = Lens.pinhole(crop_K, 493, 370)
    image = (np.arange(370 * 1240 * 3) % 251).astype(np.uint8).reshape(370, 1240, 3)
    maps = resampler(crop, full)
    assert np.array_equal(maps.valid[5], (np.arange(1240) >= 373) & (np.arange(1240) <= 373 + 492))
    seen_again = maps(image[:, 373 : 373 + 493])
    assert np.array_equal(seen_again[:, 373 : 373 + 493], image[:, 373 : 373 + 493])
    # padding repeats the nearest edge column: no hard border for the encoder to see
    assert np.array_equal(seen_again[:, 100], image[:, 373])
    assert maps.coverage == pytest.approx(493 / 1240, abs=1e-3)


def test_canonical_camera_sees_a_camera_of_its_own_intrinsics_as_a_resize() -> None:
    source = Lens.pinhole(K, 1240, 370)
    canonical = CanonicalCamera.of(source, 320, 96)
    assert np.allclose(canonical.Kn, normalise_intrinsics(K, 1240, 370))
    maps = resampler(source, canonical.lens())
    assert maps.valid.all() and maps.factor == 4  # 3.9 source pixels a side per network pixel
    # pixel i of the network image spans normalised [2i/W - 1, 2(i+1)/W - 1], source columns i W0/W to (i + 1) W0/W:
    # its 4 x 4 samples sit at the centres of its quarters
    # (the outermost samples, a 64th of a pixel beyond the image's edge, are clamped onto it)
    assert np.allclose(maps.map_x[0], (np.arange(4 * 320) + 0.5) * 1240 / (4 * 320), atol=0.02)
    assert np.allclose(maps.map_y[:, 0], (np.arange(4 * 96) + 0.5) * 370 / (4 * 96), atol=0.02)
    # so a uniform gradient is averaged to its value at each pixel's centre
    ramp = np.tile(np.linspace(0, 247, 1240, dtype=np.float32), (370, 1))
    centres = (np.arange(320) + 0.5) * 1240 / 320
    inner = slice(1, -1)  # the outermost pixels hold a clamped sample
    assert np.allclose(maps(ramp)[50][inner], np.interp(centres, np.arange(1240), ramp[0])[inner], atol=0.01)
    assert CanonicalCamera.from_record(canonical.record()) == canonical
    with pytest.raises(LensError, match="fx"):
        CanonicalCamera.from_record({"width": 320, "height": 96})


def test_depth_is_carried_to_a_distorted_input_camera_along_the_same_rays() -> None:
    canonical = CanonicalCamera.of(Lens.pinhole(K, 1240, 370), 320, 96).lens()
    raw = Lens(1240, 370, K, LENSES["plumb_bob"])
    # a plane at z = 10 + x (x the ray's slope): the depth of a ray depends only on its direction
    rays = canonical.pixel_rays()
    depth = (10.0 + 3.0 * rays[..., 0]).astype(np.float32)
    moved = depth_in(depth, canonical, raw)
    raw_rays = raw.pixel_rays()
    seen = np.isfinite(moved)
    assert seen.mean() > 0.7  # the barrel sees farther out than the canonical view
    # nearest neighbour: within one canonical pixel's change of the plane's depth
    step = 3.0 / canonical.K[0, 0]
    assert np.abs(moved[seen] - (10.0 + 3.0 * raw_rays[..., 0][seen])).max() <= step + 1e-4
