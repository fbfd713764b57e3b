"""KITTI-360 occupancy ground truth from aggregated velodyne scans (BTS ``evaluator_lidar.py`` protocol).

For a frame t the query points of :class:`OccupancyProtocol` (x in [-4, 4] m, z in [4, 20] m,
one slice y = 0.375 m) live in the *level* frame: camera 0 of frame t rotated 5 deg about x so
that its x-z plane is parallel to the road. The scans of frames t .. t+J-1 give the truth:

1. per scan, the returns whose level-frame y lies in the slice's band, or that are farther than
   the query area's far corner, are binned by velodyne bearing into 360 one-degree bins keeping
   the minimum horizontal range (empty bins keep the previous bin's range);
2. a query point is occupied in that scan if its range exceeds the surface range interpolated
   between bin centres, or is below 3 m (the official range is the norm of the homogeneous
   4-vector, i.e. sqrt(r^2 + 1); kept so that numbers compare);
3. occupied overall if (1 + votes) / J > (J - 2) / J, i.e. occupied in at least J - 2 scans;
4. visible if in front of the surface in scan 0. The official evaluator also counts points in
   front of the *network's* rendered depth as visible; like the synthetic benchmark we use
   ground-truth-only visibility, so every network is scored on the same points.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch

from kdbts_ros.core import geometry
from kdbts_ros.core.model.network import DensityField, Views
from kdbts_ros.data.records import FrameRecord, Recording, read_velodyne
from kdbts_ros.evaluation.metrics import occupancy_metrics
from kdbts_ros.evaluation.protocol import OccupancyProtocol


@dataclass(frozen=True)
class LidarOccupancySettings:
    """Constants of the lidar occupancy protocol (official values by default)."""

    scans: int = 20  # J: the frame's scan and the J - 1 following ones
    bins: int = 360  # one-degree bearing bins
    min_range: float = 3.0  # closer than this counts as occupied (the scanner's blind zone)
    homogeneous_norm: bool = True  # official quirk: range of (x, y, z, 1)
    occupied_density: float = 0.5  # a prediction is occupied where sigma > this
    protocol: OccupancyProtocol = field(default_factory=lambda: OccupancyProtocol(pitch_deg=5.0))

    def __post_init__(self) -> None:
        """Reject settings that leave nothing to vote or bin."""
        if self.scans < 1 or self.bins < 1:
            raise ValueError(f"lidar occupancy needs at least one scan and one bin, got {self.scans} and {self.bins}")

    def far_range(self) -> float:
        """Returns beyond the query area's far corner always enter the profile (the official sqrt(20^2 + 4^2))."""
        p = self.protocol
        return float(np.hypot(max(np.abs(p.z_range)), max(np.abs(p.x_range))))


def polar_profile(points_xy: np.ndarray, bins: int = 360) -> np.ndarray:
    """(bins,) minimum horizontal range per bearing bin over [-pi, pi); empty bins keep the previous bin's value.

    Bins before the first return take the range of the return with the smallest bearing (as the
    official loop starts from it); a scan without returns gives an infinitely far surface.
    """
    if len(points_xy) == 0:
        return np.full(bins, np.inf)
    angles = np.arctan2(points_xy[:, 1], points_xy[:, 0])
    ranges = np.hypot(points_xy[:, 0], points_xy[:, 1])
    idx = np.searchsorted(np.linspace(-np.pi, np.pi, bins + 1), angles, side="right") - 1
    keep = idx < bins  # a bearing of exactly +pi lies on the closing border, in no bin (as the official searchsorted)
    profile = np.full(bins, np.inf)
    np.minimum.at(profile, idx[keep], ranges[keep])
    last = np.maximum.accumulate(np.where(np.isfinite(profile), np.arange(bins), -1))
    return np.where(last >= 0, profile[np.maximum(last, 0)], ranges[np.argmin(angles)])


def surface_range(profile: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Surface range at each bearing, linear between bin centres, wrapping around +-pi."""
    if not np.isfinite(profile).any():
        return np.full(len(angles), np.inf)
    bins = len(profile)
    centres = -np.pi + (np.arange(bins) + 0.5) * (2 * np.pi / bins)
    # the last bin repeated before -pi and the first after +pi, so every bearing has two neighbours
    xp = np.r_[centres[-1] - 2 * np.pi, centres, centres[0] + 2 * np.pi]
    return np.interp(angles, xp, np.r_[profile[-1], profile, profile[0]])


def occupied_in_scan(
    points_velo: np.ndarray, profile: np.ndarray, min_range: float = 3.0, homogeneous_norm: bool = True
) -> np.ndarray:
    """(N,) bool: query points (N, 3) in one scan's velodyne frame lie behind its surface or inside ``min_range``."""
    squared = np.einsum("ij,ij->i", points_velo, points_velo) + (1.0 if homogeneous_norm else 0.0)
    dist = np.sqrt(squared)
    surface = surface_range(profile, np.arctan2(points_velo[:, 1], points_velo[:, 0]))
    return (dist > surface) | (dist < min_range)


def slice_profile(
    cloud_velo: np.ndarray, T_level_velo: np.ndarray, band: tuple[float, float], far: float, bins: int = 360
) -> np.ndarray:
    """Polar profile of a scan's returns inside the level-frame y ``band`` or at least ``far`` from the origin."""
    level = geometry.apply(T_level_velo, cloud_velo[:, :3].astype(np.float64))
    keep = ((level[:, 1] >= band[0]) & (level[:, 1] <= band[1])) | (np.linalg.norm(level, axis=1) >= far)
    return polar_profile(cloud_velo[keep, :2].astype(np.float64), bins)


def aggregate_votes(votes: np.ndarray) -> np.ndarray:
    """(N,) occupied in at least J - 2 of the J scans of (J, N) votes (the official (1 + sum) / J > (J - 2) / J)."""
    J = len(votes)
    return 1 + votes.sum(0) > J - 2


def lidar_occupancy(
    points_level: np.ndarray,
    scans: list[tuple[np.ndarray, np.ndarray]],
    settings: LidarOccupancySettings = LidarOccupancySettings(),
) -> tuple[np.ndarray, np.ndarray]:
    """Occupied and visible (flat bool arrays) of query points (y_levels, ..., 3) in the level frame.

    ``scans``: (cloud (M, >=3) in its velodyne frame, T_level_velo 4x4) per scan, the reference scan first.
    """
    s = settings
    bands = s.protocol.level_bands()
    occupied, visible = [], []
    for pts, band in zip(points_level.reshape(len(bands), -1, 3), bands):
        votes = np.stack(
            [
                occupied_in_scan(
                    geometry.apply(geometry.invert(T), pts),
                    slice_profile(cloud, T, tuple(band), s.far_range(), s.bins),
                    s.min_range,
                    s.homogeneous_norm,
                )
                for cloud, T in scans
            ]
        )
        occupied.append(aggregate_votes(votes))
        visible.append(~votes[0])
    return np.concatenate(occupied), np.concatenate(visible)


class LidarOccupancy:
    """Lidar occupancy ground truth of chosen frames of a recording (camera ``cam``), computed once for every head.

    The window of a frame is it and the J - 1 next *posed* frames, as the official evaluator walks
    the ids of ``poses.txt`` (KITTI-360 has no pose while the car stands). A frame without a pose,
    without J - 1 posed successors, or with a scan missing in its window is skipped and counted by
    reason in ``skipped``.
    """

    def __init__(
        self,
        rec: Recording,
        frames: list[int],
        settings: LidarOccupancySettings = LidarOccupancySettings(),
        cam: int = 0,
    ):
        self.settings, self.cam = settings, cam
        self.points_cam = settings.protocol.points_cam().reshape(-1, 3)
        posed = rec.posed()
        rank = {f.index: k for k, f in enumerate(posed)}
        self.truth: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.skipped: Counter[str] = Counter()
        for i in frames:
            k = rank.get(rec.frames[i].index)
            window = None if k is None else posed[k : k + settings.scans]
            reason = self.missing(window)
            if reason:
                self.skipped[reason] += 1
            else:
                assert window is not None  # missing() found nothing wrong with it
                self.truth[i] = self.frame_truth(window)

    def missing(self, window: list[FrameRecord] | None) -> str | None:
        """Why a frame's window (None: the frame has no pose) cannot give ground truth, or None when it can."""
        if window is None:
            return "no pose"
        if len(window) < self.settings.scans:
            return f"fewer than {self.settings.scans - 1} posed frames after it"
        if any(f.velodyne is None for f in window):
            return "a scan missing in its window"
        return None

    def frame_truth(self, window: list[FrameRecord]) -> tuple[np.ndarray, np.ndarray]:
        """Occupied and visible query points of the window's first frame."""
        p = self.settings.protocol
        T_level_cam = np.eye(4)
        T_level_cam[:3, :3] = p.R_cam_level().T
        T_level_world = T_level_cam @ geometry.invert(window[0].T_world_cam(self.cam))
        scans = [
            (read_velodyne(cast(Path, f.velodyne)), T_level_world @ f.T_world_base @ f.rig.T_base_velo) for f in window
        ]
        return lidar_occupancy(p.points_level(), scans, self.settings)

    def message(self, total: int) -> str:
        """One line: how many of ``total`` frames have occupancy ground truth and why the others do not."""
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return f"occupancy ground truth ({self.settings.scans} scans) for {len(self.truth)} of {total} frames" + (
            f"; skipped: {why}" if why else ""
        )

    def score(self, model: DensityField, views: Views, head: str, index: int, chunk: int) -> dict[str, float]:
        """Occupancy metrics of one head on frame ``index`` (which must have ground truth)."""
        device = views.w2c.device
        pts = torch.as_tensor(self.points_cam, dtype=torch.float32, device=device)[None]
        sigma, _ = model.query(pts, views, head, chunk)
        return self.score_prediction(sigma[0].cpu().numpy() > self.settings.occupied_density, index)

    def score_prediction(self, occupied_pred: np.ndarray, index: int) -> dict[str, float]:
        """Occupancy metrics of a prediction (bool, one per query point of ``points_cam``) on frame ``index``."""
        occupied, visible = self.truth[index]
        return occupancy_metrics(occupied_pred, occupied, visible)
