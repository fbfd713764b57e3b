"""Lenses and the canonical camera: how a camera's pixels see rays, and one camera's image seen through another.

A network sees every frame through the camera it was trained with, its *canonical camera*
(:class:`CanonicalCamera`: an input size and normalised intrinsics, stated by each checkpoint).
An incoming image is resampled into it through its own lens (:class:`Lens`: ``camera_info``'s K and
D in the ``plumb_bob``, ``rational_polynomial`` or ``equidistant`` model) by one ``cv2.remap``
whose maps (:class:`Resampler`) are computed once per camera. Nothing is squashed: where the
canonical view reaches beyond the image, its pixels are padded (the nearest edge, repeated) and
marked invalid, so that no occupancy and no depth is invented there.

Pixel coordinates follow OpenCV (pixel centres on integers). Rays have unit z. The official BTS/KDBTS
code describes cameras by *normalised* intrinsics that map camera points to image coordinates in
[-1, 1]: ``fx' = 2 fx / W0``, ``cx' = 2 cx / W0 - 1`` (same for y) with the image size W0 x H0
(:func:`normalise_intrinsics`). This module loads no torch: messages/ and data/ read lenses.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

# distortion models of sensor_msgs/CameraInfo (camera_calibration_parsers' names) and their most coefficients
MODELS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}
_MAX_TAN = 20.0  # rays beyond 87 deg off the axis never enter a pinhole view


def normalise_intrinsics(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel intrinsics (OpenCV convention) of a width x height image to normalised K'."""
    Kn = np.eye(3, dtype=np.float64)
    Kn[0, 0] = 2.0 * K[0, 0] / width
    Kn[1, 1] = 2.0 * K[1, 1] / height
    Kn[0, 2] = 2.0 * K[0, 2] / width - 1.0
    Kn[1, 2] = 2.0 * K[1, 2] / height - 1.0
    return Kn


def pixel_intrinsics(Kn: np.ndarray, width: int, height: int) -> np.ndarray:
    """Inverse of :func:`normalise_intrinsics` for an image of the given size."""
    K = np.eye(3, dtype=np.float64)
    K[0, 0] = Kn[0, 0] * width / 2.0
    K[1, 1] = Kn[1, 1] * height / 2.0
    K[0, 2] = (Kn[0, 2] + 1.0) * width / 2.0
    K[1, 2] = (Kn[1, 2] + 1.0) * height / 2.0
    return K


class LensError(ValueError):
    """A camera description that cannot be used (unknown model, wrong coefficient count, bad K)."""


@dataclass(frozen=True, eq=False)
class Lens:
    """A camera's pixel geometry: size, pixel intrinsics K and distortion D of a model in :data:`MODELS`."""

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    model: str = "plumb_bob"

    def __post_init__(self) -> None:
        K = np.asarray(self.K, np.float64).reshape(3, 3)
        D = np.asarray(self.D, np.float64).reshape(-1)
        if self.model not in MODELS:
            raise LensError(f"distortion model {self.model!r} is not supported ({', '.join(MODELS)})")
        if len(D) > MODELS[self.model]:
            raise LensError(f"{self.model} takes {MODELS[self.model]} coefficients, D has {len(D)}")
        if not (np.all(np.isfinite(K)) and np.all(np.isfinite(D)) and K[0, 0] > 0 and K[1, 1] > 0):
            raise LensError("K has no positive focal length or D is not finite")
        if self.width <= 0 or self.height <= 0:
            raise LensError(f"image size {self.width}x{self.height} is empty")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "D", D if np.any(D) else np.zeros(0))

    @classmethod
    def pinhole(cls, K: np.ndarray, width: int, height: int) -> Lens:
        """An undistorted camera."""
        return cls(width, height, K)

    @property
    def distorted(self) -> bool:
        return len(self.D) > 0

    @property
    def key(self) -> tuple:
        """What makes two lenses equal (for caching the maps made for them)."""
        return (self.width, self.height, self.model, self.K.tobytes(), self.D.tobytes())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lens) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def normalised(self) -> np.ndarray:
        """K in the official normalised convention (:func:`normalise_intrinsics`)."""
        return normalise_intrinsics(self.K, self.width, self.height)

    # ------------------------------------------------------------ rays <-> pixels
    def project(self, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (N, 2) of camera-frame rays (N, 3), and whether each lands in the image, seen one-to-one.

        A ray is seen when it is in front of the camera, inside the image (to the pixels' outer
        edges) and within the radius up to which the distortion still rises: beyond it a strong
        barrel distortion folds far rays back onto pixels that nearer rays own.
        """
        rays = np.asarray(rays, np.float64).reshape(-1, 3)
        front = rays[:, 2] > 1e-9
        z = np.where(front, rays[:, 2], 1.0)
        x, y = rays[:, 0] / z, rays[:, 1] / z
        r = np.hypot(x, y)
        if self.model == "equidistant":
            theta = np.arctan(r)
            d = np.pad(self.D, (0, 4 - len(self.D)))
            t2 = theta * theta
            theta_d = theta * (1 + t2 * (d[0] + t2 * (d[1] + t2 * (d[2] + t2 * d[3]))))
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.where(r > 1e-12, theta_d / r, 1.0)
            xd, yd = x * scale, y * scale
            folded = theta >= self._fold_limit()
        else:
            xd, yd = self._distort(x, y)
            folded = r >= self._fold_limit()
        u = self.K[0, 0] * xd + self.K[0, 1] * yd + self.K[0, 2]
        v = self.K[1, 1] * yd + self.K[1, 2]
        inside = (u >= -0.5) & (u <= self.width - 0.5) & (v >= -0.5) & (v <= self.height - 0.5)
        return np.stack([u, v], 1), front & ~folded & inside & np.isfinite(u) & np.isfinite(v)

    def _distort(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """OpenCV's radial-tangential model (plumb_bob: k1 k2 p1 p2 k3; rational: + k4 k5 k6)."""
        d = np.pad(self.D, (0, 8 - len(self.D)))
        k1, k2, p1, p2, k3, k4, k5, k6 = d
        r2 = x * x + y * y
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return xd, yd

    def _fold_limit(self) -> float:
        """The radius (equidistant: the angle) beyond which the distorted radius stops rising."""
        if not self.distorted:
            return np.inf
        if self.model == "equidistant":
            t = np.linspace(0.0, np.pi / 2, 4001)
            d = np.pad(self.D, (0, 4 - len(self.D)))
            t2 = t * t
            rd = t * (1 + t2 * (d[0] + t2 * (d[1] + t2 * (d[2] + t2 * d[3]))))
        else:
            t = np.linspace(0.0, _MAX_TAN, 20001)
            rd = self._distort(t, np.zeros_like(t))[0]
        falling = np.nonzero(np.diff(rd) <= 0)[0]
        return float(t[falling[0]]) if len(falling) else np.inf

    def unproject(self, pixels: np.ndarray) -> np.ndarray:
        """Unit-z rays (N, 3) of pixels (N, 2): the inverse of :meth:`project` inside the image."""
        pts = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
        if not self.distorted:
            xy = cv2.undistortPoints(pts, self.K, None)
        elif self.model == "equidistant":
            criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)
            xy = cv2.fisheye.undistortPoints(pts, self.K, self.D, criteria=criteria)
        else:
            criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)
            xy = cv2.undistortPoints(pts, self.K, self.D, None, None, None, criteria)
        xy = xy.reshape(-1, 2)
        return np.concatenate([xy, np.ones((len(xy), 1))], 1)

    def pixel_rays(self) -> np.ndarray:
        """Unit-z rays (H, W, 3) of every pixel centre."""
        v, u = np.mgrid[0 : self.height, 0 : self.width]
        return self.unproject(np.stack([u.ravel(), v.ravel()], 1)).reshape(self.height, self.width, 3)


class Projector(Protocol):
    """What a source camera must offer to be resampled: its size and its projection of rays."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    def project(self, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class CanonicalCamera:
    """The camera a network was trained with: input size and normalised intrinsics (the official convention)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def Kn(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def lens(self) -> Lens:
        """The canonical view as a pinhole lens.

        Features are sampled with ``align_corners=False``, so the network's pixel i sits at
        normalised ``(2 i + 1) / W - 1``: its pixel intrinsics put the principal point half a
        pixel before :func:`pixel_intrinsics`'.
        """
        K = np.array(
            [
                [self.fx * self.width / 2, 0.0, (self.cx + 1) * self.width / 2 - 0.5],
                [0.0, self.fy * self.height / 2, (self.cy + 1) * self.height / 2 - 0.5],
                [0.0, 0.0, 1.0],
            ]
        )
        return Lens.pinhole(K, self.width, self.height)

    def at_size(self, width: int, height: int) -> CanonicalCamera:
        """The same view at another input size (normalised intrinsics do not depend on it)."""
        return CanonicalCamera(width, height, self.fx, self.fy, self.cx, self.cy)

    def record(self) -> dict[str, float]:
        """The checkpoint record (``info["camera"]``)."""
        return {"width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy}

    @classmethod
    def from_record(cls, record: dict) -> CanonicalCamera:
        """Read a checkpoint record; LensError names what is wrong with it."""
        try:
            cam = cls(
                int(record["width"]),
                int(record["height"]),
                *(float(record[k]) for k in ("fx", "fy", "cx", "cy")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LensError(f"camera record {record!r} is not width, height, fx, fy, cx, cy ({exc})") from exc
        if cam.width <= 0 or cam.height <= 0 or not (cam.fx > 0 and cam.fy > 0 and np.isfinite([cam.cx, cam.cy]).all()):
            raise LensError(f"camera record {record!r}: empty size or no positive focal length")
        return cam

    @classmethod
    def of(cls, lens: Lens, width: int, height: int) -> CanonicalCamera:
        """The view of an undistorted lens at a network input size (a training camera)."""
        Kn = lens.normalised()
        return cls(width, height, *(float(Kn[i, j]) for i, j in ((0, 0), (1, 1), (0, 2), (1, 2))))

    @classmethod
    def from_normalised(cls, values: Sequence[float], width: int, height: int) -> CanonicalCamera:
        """From (fx', fy', cx', cy')."""
        fx, fy, cx, cy = (float(v) for v in values)
        return cls(width, height, fx, fy, cx, cy)


# The official training cameras (kdbts_reference.md: default normalised projection matrices).
KITTI_360 = (0.7849, 2.9391, -0.0312, 0.2701)
KITTI_RAW = (1.1619, 3.8482, -0.0184, -0.0781)


MAX_SUPERSAMPLING = 4  # beyond 4x4 samples per target pixel the depth of real frames no longer changes


@dataclass(frozen=True)
class Resampler:
    """One camera's image seen through another: cv2.remap maps and the target pixels with a source.

    The maps sample a grid ``factor`` times finer than the target, averaged down (cv2's area
    interpolation): a target pixel is the mean of the source over its footprint, whichever lens the
    source has, rather than one bilinear sample that aliases when the source is denser.
    """

    map_x: np.ndarray  # (h * factor, w * factor) float32 source column of each sample
    map_y: np.ndarray
    valid: np.ndarray  # (h, w) bool: the target pixel's ray is seen by the source
    factor: int = 1

    def __call__(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """The image in the target camera; invalid pixels repeat the nearest edge (no hard border for the encoder)."""
        fine = cv2.remap(image, self.map_x, self.map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)
        if self.factor == 1:
            return fine
        return cv2.resize(fine, self.valid.shape[::-1], interpolation=cv2.INTER_AREA)

    @property
    def coverage(self) -> float:
        """The fraction of target pixels the source sees."""
        return float(self.valid.mean())


def _maps(source: Projector, target: Lens) -> tuple[np.ndarray, np.ndarray]:
    """Source pixels (N, 2) of the target's pixel rays, and whether the source sees each."""
    rays = target.pixel_rays().reshape(-1, 3)
    uv, seen = source.project(rays)
    # unseen rays sample the image's nearest edge point; those that a fold or the back of the camera would
    # put inside the image take the edge where their direction leaves it
    centre = np.array([(source.width - 1) / 2, (source.height - 1) / 2])
    size = np.array([source.width, source.height])
    finite = np.isfinite(uv).all(1)
    misplaced = ~seen & (~finite | ((uv > -1).all(1) & (uv < size).all(1)))
    direction = np.where(finite[:, None], uv - centre, rays[:, :2])
    with np.errstate(divide="ignore"):
        reach = np.min(np.where(np.abs(direction) > 0, (size / 2) / np.abs(direction), np.inf), axis=1)
    edge = centre + direction * np.where(np.isfinite(reach), reach, 0.0)[:, None]
    nearest = np.clip(np.where(finite[:, None], uv, centre), -0.5, size - 0.5)
    uv = np.where(seen[:, None], uv, np.where(misplaced[:, None], edge, nearest))
    return uv, seen


def finer(lens: Lens, factor: int) -> Lens:
    """An undistorted lens with ``factor`` x ``factor`` pixels for each of ``lens``' (same rays, same footprint)."""
    K = lens.K.copy()
    K[:2, :2] *= factor
    K[:2, 2] = (K[:2, 2] + 0.5) * factor - 0.5
    return Lens.pinhole(K, lens.width * factor, lens.height * factor)


def resampler(source: Projector, target: Lens, max_factor: int = MAX_SUPERSAMPLING) -> Resampler:
    """The maps that show ``source``'s images in ``target``'s pixels (same optical centre and axes).

    The samples per target pixel follow how many source pixels its footprint covers (up to ``max_factor``
    a side); a denser target than the source gets one bilinear sample per pixel.
    """
    uv, seen = _maps(source, target)
    shape = (target.height, target.width)
    step = np.median(np.abs(np.diff(uv.reshape(*shape, 2)[..., 0], axis=1))) if target.width > 1 else 1.0
    factor = int(np.clip(round(float(step)), 1, max_factor)) if not target.distorted else 1
    if factor > 1:
        uv = _maps(source, finer(target, factor))[0]
    fine = (target.height * factor, target.width * factor)
    return Resampler(
        uv[:, 0].reshape(fine).astype(np.float32),
        uv[:, 1].reshape(fine).astype(np.float32),
        seen.reshape(shape),
        factor,
    )


@functools.lru_cache(maxsize=8)
def lens_resampler(source: Lens, target: Lens) -> Resampler:
    """:func:`resampler` (one sample per pixel) between two lenses, kept for the few pairs a running node sees."""
    return resampler(source, target, max_factor=1)


def depth_in(depth: np.ndarray, lens: Lens, target: Lens, outside: float = np.nan) -> np.ndarray:
    """A z-depth image (or any per-ray image) of ``lens`` seen in ``target`` (same optical centre and axes):
    nearest neighbour, so no depth is blended across an edge; ``outside`` (NaN) where ``lens`` does not see.
    """
    maps = lens_resampler(lens, target)
    out = cv2.remap(
        depth.astype(np.float32), maps.map_x, maps.map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE
    )
    out[~maps.valid] = outside
    return out
