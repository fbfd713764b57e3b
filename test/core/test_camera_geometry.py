"""Projection, validity, intrinsics normalisation, rays and rigid transforms."""

import numpy as np
import torch

from kdbts_ros.core import camera, geometry, lens

K_KITTI = np.array([[721.5377, 0, 609.5593], [0, 721.5377, 172.854], [0, 0, 1]])


def test_normalised_intrinsics_match_official_kitti_values():
    Kn = lens.normalise_intrinsics(K_KITTI, 1242, 375)
    np.testing.assert_allclose([Kn[0, 0], Kn[1, 1], Kn[0, 2], Kn[1, 2]], [1.1619, 3.8482, -0.0184, -0.0781], atol=1e-4)
    np.testing.assert_allclose(lens.pixel_intrinsics(Kn, 1242, 375), K_KITTI, atol=1e-9)


def test_project_matches_the_pinhole_model_by_hand(rng):
    Kn = torch.tensor(lens.normalise_intrinsics(K_KITTI, 1242, 375))
    pts = torch.tensor(rng.uniform([-5, -2, 3], [5, 2, 60], (500, 3)))
    xy, z, invalid = camera.project(pts, Kn)
    # the same points by hand: x' = fx' x / z + cx', y' = fy' y / z + cy', depth z unchanged
    torch.testing.assert_close(xy[:, 0], Kn[0, 0] * pts[:, 0] / pts[:, 2] + Kn[0, 2])
    torch.testing.assert_close(xy[:, 1], Kn[1, 1] * pts[:, 1] / pts[:, 2] + Kn[1, 2])
    torch.testing.assert_close(z[:, 0], pts[:, 2])
    expected_invalid = (xy.abs() > 1).any(-1)
    assert torch.equal(invalid, expected_invalid)


def test_validity_behind_and_outside():
    Kn = torch.tensor(lens.normalise_intrinsics(K_KITTI, 1242, 375))
    pts = torch.tensor(
        [[0.0, 0.0, 10.0], [0.0, 0.0, -10.0], [0.0, 0.0, 0.0], [100.0, 0.0, 10.0], [0.0, -30.0, 10.0]],
        dtype=torch.float64,
    )
    _, _, invalid = camera.project(pts, Kn)
    assert invalid.tolist() == [False, True, True, True, True]


def test_ray_grid_lands_on_pixel_centres_of_its_intrinsics():
    Kn = lens.normalise_intrinsics(K_KITTI, 1242, 375)
    h, w = 6, 20
    dirs = camera.ray_grid(torch.tensor(Kn), h, w).numpy()
    Kp = camera.ray_pixel_intrinsics(Kn, w, h)
    uv = dirs.reshape(-1, 3) @ Kp.T
    vv, uu = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    np.testing.assert_allclose(uv[:, 0] / uv[:, 2], uu.ravel(), atol=1e-9)
    np.testing.assert_allclose(uv[:, 1] / uv[:, 2], vv.ravel(), atol=1e-9)


def test_transform_helpers(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    T = geometry.to_matrix(np.array([1.0, -2.0, 3.0]), q)
    np.testing.assert_allclose(geometry.invert(T) @ T, np.eye(4), atol=1e-12)
    t, q2 = geometry.from_matrix(T)
    np.testing.assert_allclose(geometry.to_matrix(t, q2), T, atol=1e-12)
    assert geometry.rigid_problem(t, q2) is None
    assert geometry.rigid_problem(t, np.array([0, 0, 0, 2.0])) == "quaternion norm 2.0000 is not 1"
    assert geometry.rigid_problem(t, np.array([0, 0, 0, 1.0005])) is None  # within the 1e-3 tolerance
    assert geometry.rigid_problem(np.array([np.nan, 0, 0]), q) == "non-finite transform"
    # interpolating halfway around z by 90 degrees gives 45 degrees
    Rz = geometry.to_matrix(np.array([2.0, 0, 0]), np.array([0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]))
    mid = geometry.interpolate(np.eye(4), Rz, 0.5)
    np.testing.assert_allclose(mid[:3, 3], [1.0, 0, 0])
    np.testing.assert_allclose(mid[0, :2], [np.cos(np.pi / 4), -np.sin(np.pi / 4)], atol=1e-12)
