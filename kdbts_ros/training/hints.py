"""Classical depth hints for training (Depth Hints, Watson et al., ICCV 2019): pseudo depth from geometry alone.

- :func:`stereo_hint`: OpenCV semi-global matching on a rectified stereo pair, kept where a
  left-right consistency check passes (occlusions and mismatches fail it).
- :func:`plane_sweep_hint`: a monocular frame against its posed neighbours: fronto-parallel planes
  evenly spaced in inverse depth, the photometric cost (SSIM + L1 on a small window) per plane, its
  minimum refined between planes; kept where the minimum is distinct and every neighbour agrees
  (a static scene is assumed: movers and occlusions make the neighbours disagree).

Both return z-depth in metres (float32, H x W), 0 where there is no hint. The hint supervises the
rendered depth only where its own reprojection error beats the network's (see
:func:`kdbts_ros.training.losses.depth_hint_loss`).
"""

from __future__ import annotations

import cv2
import numpy as np

# SGBM: 5x5 blocks with the usual smoothness penalties (8 and 32 times the block area)
SGBM_BLOCK = 5
LR_TOLERANCE_PX = 1.0  # left-right check: the two disparities of a pixel agree within this
SWEEP_PLANES = 64
SWEEP_WINDOW = 7  # cost aggregation window (pixels)
SWEEP_DISTINCT = 0.9  # the best cost must be below this share of the best cost away from it
SWEEP_AGREEMENT = 0.1  # neighbours' depths agree within this relative difference
SWEEP_MAX_COST = 0.35  # a matching cost above this is no match at all


def _grey(image: np.ndarray) -> np.ndarray:
    """uint8 luma of an RGB or grey uint8 image."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _sgbm_disparity(left: np.ndarray, right: np.ndarray, num_disparities: int) -> np.ndarray:
    """Disparity in pixels of the left image (float32, < 0 where SGBM finds none)."""
    matcher = cv2.StereoSGBM.create(
        minDisparity=0,
        numDisparities=num_disparities,
        blockSize=SGBM_BLOCK,
        P1=8 * SGBM_BLOCK**2,
        P2=32 * SGBM_BLOCK**2,
        uniquenessRatio=10,
        speckleWindowSize=50,
        speckleRange=2,
        mode=cv2.STEREO_SGBM_MODE_SGBM,
    )
    # SGBM leaves its first num_disparities columns unmatched: pad them on, so every column of the image gets a
    # disparity (a match that lands in the padding falls outside the right image and fails the left-right check)
    pad = [cv2.copyMakeBorder(im, 0, 0, num_disparities, 0, cv2.BORDER_REPLICATE) for im in (left, right)]
    return matcher.compute(*pad)[:, num_disparities:].astype(np.float32) / 16.0


def stereo_hint(
    left: np.ndarray, right: np.ndarray, fx: float, baseline: float, z_near: float, z_far: float
) -> np.ndarray:
    """z-depth (H, W) of the left image of a rectified pair from SGBM with a left-right check; 0 where invalid.

    ``fx`` in pixels of these images, ``baseline`` in metres (the right camera ``baseline`` to the
    right of the left one). The right image's disparity comes from matching the mirrored pair, so
    one matcher serves both directions. Depths outside [z_near, z_far] are no hints.
    """
    left, right = _grey(left), _grey(right)
    w = left.shape[1]
    # disparities up to the nearest depth trained on, a multiple of 16 as SGBM wants, leaving some columns
    needed = int(np.ceil(fx * baseline / z_near / 16.0)) * 16
    num = max(16, min(needed, (w // 2) // 16 * 16))
    d_left = _sgbm_disparity(left, right, num)
    d_right = _sgbm_disparity(right[:, ::-1].copy(), left[:, ::-1].copy(), num)[:, ::-1]
    cols = np.arange(w, dtype=np.float32)[None, :]
    # the right image's pixel where each left pixel lands, and its own disparity there
    target = np.rint(cols - d_left).astype(np.int64)
    inside = (d_left > 0) & (target >= 0) & (target < w)
    back = np.take_along_axis(d_right, np.clip(target, 0, w - 1), axis=1)
    valid = inside & (back > 0) & (np.abs(back - d_left) <= LR_TOLERANCE_PX)
    depth = np.where(valid, fx * baseline / np.where(valid, d_left, 1.0), 0.0)
    depth[(depth < z_near) | (depth > z_far)] = 0.0
    return depth.astype(np.float32)


def _matching_cost(ref: np.ndarray, warped: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """0.85 (1 - SSIM) / 2 + 0.15 |diff| on 3x3 windows, averaged over the aggregation window; inf outside."""
    mu_x, mu_y = cv2.blur(ref, (3, 3)), cv2.blur(warped, (3, 3))
    sxx = cv2.blur(ref * ref, (3, 3)) - mu_x**2
    syy = cv2.blur(warped * warped, (3, 3)) - mu_y**2
    sxy = cv2.blur(ref * warped, (3, 3)) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    err = 0.85 * np.clip((1 - ssim) / 2, 0, 1) + 0.15 * np.abs(ref - warped)
    window = (SWEEP_WINDOW, SWEEP_WINDOW)
    cost = cv2.blur(err, window)
    # a window reaching outside the neighbour's image compares nothing there
    ok = cv2.blur(inside.astype(np.float32), window) > 0.999
    return np.where(ok, cost, np.inf).astype(np.float32)


def sweep_costs(
    ref: np.ndarray, other: np.ndarray, K: np.ndarray, T_other_ref: np.ndarray, inv_depths: np.ndarray
) -> np.ndarray:
    """Matching cost (D, H, W) of ``ref`` against ``other`` for fronto-parallel planes at 1 / ``inv_depths``.

    ``K`` (3, 3) pixel intrinsics of both images (pixel centres at integers), ``T_other_ref``
    maps ref camera points into the other camera. Images are float32 grey in [0, 1].
    """
    h, w = ref.shape
    R, t = T_other_ref[:3, :3], T_other_ref[:3, 3:]
    K_inv = np.linalg.inv(K)
    ones = np.ones_like(other)
    costs = np.empty((len(inv_depths), h, w), np.float32)
    normal = np.array([[0.0, 0.0, 1.0]])
    for i, q in enumerate(inv_depths):
        # plane z = 1/q: X_other = (R + t n^T q) X_ref, so x_other ~ K (R + t n^T q) K^-1 x_ref
        H = K @ (R + t @ normal * q) @ K_inv
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        warped = cv2.warpPerspective(other, H, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        inside = cv2.warpPerspective(ones, H, (w, h), flags=flags, borderValue=0.0) > 0.999
        costs[i] = _matching_cost(ref, warped, inside)
    return costs


def _best_inverse_depth(costs: np.ndarray, inv_depths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel the cost minimum refined by a parabola through it and its neighbours, and whether it is
    distinct (well below the best cost more than one plane away) and a match at all.
    """
    D = len(inv_depths)
    best = np.argmin(costs, 0)
    c = np.take_along_axis(costs, best[None], 0)[0]
    lo = np.take_along_axis(costs, np.clip(best - 1, 0, D - 1)[None], 0)[0]
    hi = np.take_along_axis(costs, np.clip(best + 1, 0, D - 1)[None], 0)[0]
    interior = (best > 0) & (best < D - 1) & np.isfinite(lo) & np.isfinite(hi)
    lo, c0, hi = (np.where(interior, x, 0.0) for x in (lo, c, hi))  # no inf - inf outside the interior
    curvature = lo - 2 * c0 + hi
    offset = np.where(interior & (curvature > 0), 0.5 * (lo - hi) / np.where(curvature > 0, curvature, 1.0), 0.0)
    step = inv_depths[1] - inv_depths[0]
    q = inv_depths[best] + np.clip(offset, -0.5, 0.5) * step
    planes = np.arange(D)[:, None, None]
    away = np.where(np.abs(planes - best[None]) > 1, costs, np.inf).min(0)
    keep = interior & np.isfinite(c) & (c < SWEEP_MAX_COST) & (c < SWEEP_DISTINCT * away)
    return q.astype(np.float32), keep


def plane_sweep_hint(
    ref: np.ndarray,
    neighbours: list[tuple[np.ndarray, np.ndarray]],
    K: np.ndarray,
    z_near: float,
    z_far: float,
    planes: int = SWEEP_PLANES,
) -> np.ndarray:
    """z-depth (H, W) of ``ref`` from plane sweeps against posed neighbours; 0 where there is no hint.

    ``neighbours``: (image, T_other_ref) pairs, T_other_ref mapping ref camera points into that
    neighbour's camera. A pixel keeps a hint when every neighbour's cost minimum is distinct and
    their depths agree within ``SWEEP_AGREEMENT``; the hint is their mean.
    """
    img = _grey(ref).astype(np.float32) / 255.0
    inv_depths = np.linspace(1.0 / z_far, 1.0 / z_near, planes)
    estimates, keep = [], np.ones(img.shape, bool)
    for other, T_other_ref in neighbours:
        costs = sweep_costs(img, _grey(other).astype(np.float32) / 255.0, K, T_other_ref, inv_depths)
        q, ok = _best_inverse_depth(costs, inv_depths)
        estimates.append(1.0 / np.maximum(q, 1e-6))
        keep &= ok
    z = np.stack(estimates)
    mean = z.mean(0)
    keep &= (np.abs(z - mean) <= SWEEP_AGREEMENT * mean).all(0)
    keep &= (mean >= z_near) & (mean <= z_far)
    return np.where(keep, mean, 0.0).astype(np.float32)
