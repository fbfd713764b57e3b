"""Fisheye cameras in the unified (MEI) model, seen through virtual pinhole views.

KITTI-360's side cameras (``image_02`` / ``image_03``) are MEI fisheyes. The official BTS/KDBTS
loaders (``FisheyeToPinholeSampler``) resample each fisheye frame into a virtual pinhole camera with
the perspective cameras' K, rotated relative to the fisheye by ``fisheye_rotation`` (yaw, pitch in
degrees; (0, -15) looks 15 deg down). So do we, with the resampling every camera goes through
(:func:`kdbts_ros.core.lens.resampler`): :class:`MeiCamera` is a source camera (a ``Projector``) and
:class:`Rotated` turns the virtual camera's rays into the fisheye frame, ``R_fish_virtual K^-1 [u, v, 1]``.
Pixels are centred on integer coordinates in both images (OpenCV's convention). Virtual pixels whose
ray misses the fisheye image (beyond its pixels' outer edges, or beyond the angle the model maps
one-to-one) are invalid and repeat the fisheye image's nearest edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from kdbts_ros.core.lens import Projector
from kdbts_ros.data.records import DatasetError, require_file

OFFICIAL_ROTATION = (0.0, -15.0)  # the training configs' fisheye_rotation (yaw, pitch), degrees


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

    def pixels(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) pixels of (N, 3) camera points: unit sphere, shift by xi, radial-tangential distortion."""
        x, y = self._plane(points)
        r2 = x * x + y * y
        radial = 1 + self.k1 * r2 + self.k2 * r2 * r2
        xd = x * radial + 2 * self.p1 * x * y + self.p2 * (r2 + 2 * x * x)
        yd = y * radial + self.p1 * (r2 + 2 * y * y) + 2 * self.p2 * x * y
        return np.stack([self.gamma1 * xd + self.u0, self.gamma2 * yd + self.v0], axis=1)

    def project(self, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (N, 2) of rays (N, 3) and whether each is seen: mapped one-to-one, inside the image
        (to its pixels' outer edges, as :meth:`kdbts_ros.core.lens.Lens.project`)."""
        rays = np.asarray(rays, np.float64).reshape(-1, 3)
        uv = self.pixels(rays)
        u, v = uv[:, 0], uv[:, 1]
        inside = (u >= -0.5) & (u <= self.width - 0.5) & (v >= -0.5) & (v <= self.height - 0.5)
        return uv, self.valid(rays) & inside

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


@dataclass(frozen=True, eq=False)  # an array: identity equality
class Rotated:
    """A source camera seen from a camera with the same optical centre, turned by ``R_source_view``.

    Its ``project`` takes rays of the turned (virtual) camera: ``R_source_view`` maps them into the
    source's frame first.
    """

    source: Projector
    R_source_view: np.ndarray

    @property
    def width(self) -> int:
        return self.source.width

    @property
    def height(self) -> int:
        return self.source.height

    def project(self, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.source.project(np.asarray(rays, np.float64).reshape(-1, 3) @ np.asarray(self.R_source_view).T)
