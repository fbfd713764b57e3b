"""The papers' metrics: KITTI depth errors and KITTI-360 occupancy accuracies, per frame."""

from __future__ import annotations

import warnings

import numpy as np

from kdbts_ros.data.records import DatasetError

DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
# Abs Rel and delta < 1.25 on the pixels off the road and on it, and the share off it (see ground_split)
SPLIT_KEYS = ("off_abs_rel", "off_a1", "road_abs_rel", "road_a1", "off_share")
OCCUPANCY_KEYS = ("o_acc", "o_prec", "o_rec", "ie_acc", "ie_prec", "ie_rec")


def depth_metrics(
    gt: np.ndarray, pred: np.ndarray, min_depth: float = 1e-3, max_depth: float = 80.0
) -> dict[str, float]:
    """Abs Rel, Sq Rel, RMSE, RMSE log and delta < 1.25^k over pixels with min < gt < max; pred clamped to [min,
    max].
    """
    valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    if not valid.any():
        raise DatasetError("a frame has no valid ground-truth depth (an all-zero depth image?)")
    g = gt[valid].astype(np.float64)
    p = np.clip(pred[valid].astype(np.float64), min_depth, max_depth)
    ratio = np.maximum(g / p, p / g)
    return {
        "abs_rel": float(np.mean(np.abs(g - p) / g)),
        "sq_rel": float(np.mean((g - p) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((g - p) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2))),
        "a1": float(np.mean(ratio < 1.25)),
        "a2": float(np.mean(ratio < 1.25**2)),
        "a3": float(np.mean(ratio < 1.25**3)),
    }


def ground_split_metrics(
    gt: np.ndarray, pred: np.ndarray, off: np.ndarray, min_depth: float = 1e-3, max_depth: float = 80.0
) -> dict[str, float]:
    """:data:`SPLIT_KEYS` of one frame: Abs Rel and delta < 1.25 on the pixels ``off`` the road and on the rest
    (NaN for a part with no valid pixel), and the share of valid pixels off the road."""
    valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    out = {"off_share": float(off[valid].mean()) if valid.any() else float("nan")}
    for name, part in (("off", off), ("road", ~off)):
        if (part & valid).any():
            m = depth_metrics(gt[part], pred[part], min_depth, max_depth)
            out[f"{name}_abs_rel"], out[f"{name}_a1"] = m["abs_rel"], m["a1"]
        else:
            out[f"{name}_abs_rel"] = out[f"{name}_a1"] = float("nan")
    return out


def _share(num: np.ndarray, den: np.ndarray) -> float:
    """Mean of ``num`` over ``den``; NaN when ``den`` is empty (averaged with nanmean over frames)."""
    return float(num[den].mean()) if den.any() else float("nan")


def occupancy_metrics(pred: np.ndarray, occupied: np.ndarray, visible: np.ndarray) -> dict[str, float]:
    """KITTI-360 protocol for one frame: boolean predictions, ground truth and visibility of the query points.

    As the official evaluator, ground-truth occupancy counts only where it is not
    visible (a visible point lies in front of the surface, so it is empty):
      O_acc  = mean(pred == gt) over all points, O_prec / O_rec on occupied,
      IE_acc = mean(pred == gt) over invisible points,
      IE_rec = share of invisible, empty points predicted empty, IE_prec its precision.
    """
    gt = occupied & ~visible
    hidden = ~visible
    correct = pred == gt
    return {
        "o_acc": float(correct.mean()),
        "o_prec": _share(gt, pred),
        "o_rec": _share(pred, gt),
        "ie_acc": _share(correct, hidden),
        "ie_prec": _share(~gt, hidden & ~pred),
        "ie_rec": _share(~pred, hidden & ~gt),
    }


def frame_means(records: list[dict[str, float]], keys: tuple[str, ...]) -> dict[str, float]:
    """Mean of each key over per-frame records, ignoring NaN (a frame may lack a class); NaN if every frame does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (no prediction ever occupied) stay NaN
        return {k: float(np.nanmean([r[k] for r in records])) for k in keys}
