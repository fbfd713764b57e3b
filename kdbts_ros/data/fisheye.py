"""Fisheye cameras in the unified (MEI) model and their resampling into virtual pinhole views.

KITTI-360's side cameras (``image_02`` / ``image_03``) are MEI fisheyes. The official BTS/KDBTS
loaders (``FisheyeToPinholeSampler``) resample each fisheye frame into a virtual pinhole camera with
the perspective cameras' K, rotated relative to the fisheye by ``fisheye_rotation`` (yaw, pitch in
degrees; (0, -15) looks 15 deg down). So do we: a virtual pixel's ray ``R_fish_virtual K^-1 [u, v, 1]``
is projected with the MEI model, and cv2.remap samples the fisheye image there bilinearly.
Pixels are centred on integer coordinates in both images (OpenCV's convention). Virtual pixels whose
ray misses the fisheye image (beyond its outermost pixel centres, or beyond the angle the model maps
one-to-one) are black (0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from kdbts_ros.data.records import DatasetError, Resampling, require_file

OFFICIAL_ROTATION = (0.0, -15.0)  # the training configs' fisheye_rotation (yaw, pitch), degrees
OUTSIDE = -16.0  # map value of a pixel without source: far enough outside that bilinear sampling sees only border


@dataclass(frozen=True)
class MeiCamera:
    """A fisheye camera in the unified (MEI) model of KITTI-360's ``image_02.yaml`` / ``image_03.yaml``."""

    name: str
    width: int
    height: int
    xi: float
    k1: float
    k2: float
    p1: float
    p2: float
    gamma1: float
    gamma2: float
    u0: float
    v0: float

    def _plane(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Undistorted plane coordinates of (N, 3) points: onto the unit sphere, then seen from (0, 0, -xi)."""
        p = points / np.linalg.norm(points, axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):  # rays through the centre itself; valid() rejects them
            return p[:, 0] / (p[:, 2] + self.xi), p[:, 1] / (p[:, 2] + self.xi)

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) pixels of (N, 3) camera points: unit sphere, shift by xi, radial-tangential distortion."""
        x, y = self._plane(points)
        r2 = x * x + y * y
        radial = 1 + self.k1 * r2 + self.k2 * r2 * r2
        xd = x * radial + 2 * self.p1 * x * y + self.p2 * (r2 + 2 * x * x)
        yd = y * radial + self.p1 * (r2 + 2 * y * y) + 2 * self.p2 * x * y
        return np.stack([self.gamma1 * xd + self.u0, self.gamma2 * yd + self.v0], axis=1)

    def valid(self, points: np.ndarray) -> np.ndarray:
        """(N,) whether the model maps each ray one-to-one (in front of the mirror's horizon, distortion rising)."""
        z = points[:, 2] / np.linalg.norm(points, axis=1)
        # beyond z = -1/xi (xi >= 1) or -xi (xi < 1) rays from the projection centre fold back onto seen ones
        horizon = min(self.xi, 1 / self.xi) if self.xi > 0 else 0.0
        x, y = self._plane(points)
        r2 = x * x + y * y
        # d/dr of r (1 + k1 r^2 + k2 r^4): where it turns negative, farther rays land on nearer pixels
        rising = 1 + 3 * self.k1 * r2 + 5 * self.k2 * r2 * r2 > 0
        return (z > -horizon) & np.isfinite(r2) & rising


def read_mei_yaml(path: str | Path) -> MeiCamera:
    """MeiCamera of an OpenCV-style ``%YAML:1.0`` file (the directive is not YAML 1.1, so it is dropped)."""
    path = require_file(Path(path), "fisheye calibration")
    text = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("%YAML"))
    try:
        d = yaml.safe_load(text)
        dist, proj = d["distortion_parameters"], d["projection_parameters"]
        return MeiCamera(
            str(d["camera_name"]),
            int(d["image_width"]),
            int(d["image_height"]),
            float(d["mirror_parameters"]["xi"]),
            float(dist["k1"]),
            float(dist["k2"]),
            float(dist["p1"]),
            float(dist["p2"]),
            float(proj["gamma1"]),
            float(proj["gamma2"]),
            float(proj["u0"]),
            float(proj["v0"]),
        )
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"fisheye calibration {path} is malformed: {exc!r}") from exc


def virtual_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """3x3 virtual camera -> fisheye rotation R_y(yaw) R_x(pitch): the official from_euler("xy", (pitch, yaw))."""
    a, b = np.radians(pitch_deg), np.radians(yaw_deg)
    R_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    R_y = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return R_y @ R_x


def pinhole_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H * W, 3) rays K^-1 [u, v, 1] of every pixel centre, row by row."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pixels = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
    return pixels @ np.linalg.inv(K).T


def pinhole_maps(
    mei: MeiCamera, K: np.ndarray, size: tuple[int, int], R_fish_virtual: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps (float32 (H, W) fisheye column, row) of a virtual pinhole camera K of ``size`` (W, H).

    ``R_fish_virtual`` turns virtual camera rays into the fisheye frame (default: the same axes).
    A pixel whose ray misses the fisheye image maps to OUTSIDE, so remap gives it the border value 0.
    """
    width, height = size
    rays = pinhole_rays(K, width, height)
    if R_fish_virtual is not None:
        rays = rays @ np.asarray(R_fish_virtual).T
    uv = mei.project(rays)
    # sources beyond the outermost pixel centres would be blended with the black border
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= mei.width - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= mei.height - 1)
    uv[~(mei.valid(rays) & inside)] = OUTSIDE
    return (uv[:, 0].reshape(height, width).astype(np.float32), uv[:, 1].reshape(height, width).astype(np.float32))


def pinhole_resampling(
    mei: MeiCamera, K: np.ndarray, size: tuple[int, int], R_fish_virtual: np.ndarray | None = None
) -> Resampling:
    """The Resampling of fisheye ``mei``'s images into the virtual pinhole camera (see :func:`pinhole_maps`)."""
    return Resampling(*pinhole_maps(mei, K, size, R_fish_virtual), mei.width, mei.height)
