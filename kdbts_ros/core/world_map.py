"""The fused world map: every processed frame integrated into a gravity-aligned rolling voxel window.

Each voxel holds the log-odds of being occupied, updated and clamped as octomap does
(Hornung et al. 2013): one observation adds ``logit(prob_hit)`` or ``logit(prob_miss)`` and the
sum is clamped to ``[logit(clamp_min), logit(clamp_max)]`` so that a cell can always change its
mind again. Log-odds 0 is *unknown* (never observed, or decayed back): a cell is occupied above 0
and free below. ``decay_per_s`` moves every cell back towards 0, so what is not seen again fades.

Window: a fixed (z, y, x) array of ``map.resolution`` voxels, ``extent_xy`` wide and ``extent_z``
high, centred on the camera. When the camera is more than ``recentre_margin`` of the extent away
from the centre, the contents shift by whole voxels so the camera is central again; the cells that
leave the window are forgotten and the vacated ones become unknown. Memory is that one array
(float32) and a same-shaped uint8 scratch, whatever the length of the drive.

Frames: the map's frame has z up, because the layers and the 2-D projection are horizontal in it.
Poses are given in that frame: the runner's map stage rotates the fixed frame's poses into it
(:func:`gravity_rotation`, ``map.up_axis``: a REP 103 ``odom``/``map`` is that frame already, an
optical-frame world such as kitti2bag odometry's is turned so its -y is up). That is checked loosely
per frame: a vehicle camera's optical y axis (down in the image) must point within 60 degrees of
the map's -z; frames where it does not are still fused but counted in ``tilted``.

Written by hand, in numpy: the log-odds integration and the rolling window, because open3d's
VoxelGrid holds colours only (no per-voxel probability, clamped update or shift) and octomap's
Python bindings are not maintained for current Pythons. Beside this module: the 2-D projection
(:mod:`kdbts_ros.core.map_2d`), the map files (:mod:`kdbts_ros.data.map_files`) and the ray
integrators of the evaluation (:mod:`kdbts_ros.evaluation.ray_fusion`).

Robustness: a frame without a pose, with a non-finite or non-rigid pose, or with a non-finite
density in a seen cell is skipped and counted in ``skipped`` by reason, never fused. Time jumps
are not this module's to detect: the runner's time-jump rule clears the map (:meth:`WorldMap.reset`)
or lets it fuse on; here a stamp later than the last decays the map by the time between them and
an earlier one decays nothing.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import TypedDict

import numpy as np

from kdbts_ros.core.config import MapConfig
from kdbts_ros.core.grids import R_CAM_GRID, GridSpec

DECAY_STEP = 0.05  # log-odds: decay is applied in steps of at least this (default rate: once a second)


def logit(p: float) -> float:
    """log(p / (1 - p))."""
    return math.log(p / (1.0 - p))


class MapStatus(TypedDict):
    """:meth:`WorldMap.status`: frames fused, skipped and resets by reason, tilted frames, known and occupied cells."""

    frames: int
    skipped: dict[str, int]
    resets: dict[str, int]
    tilted: int
    known: int
    occupied: int


def transform(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 3) mapped by a 4x4 transform, in the points' dtype, column by column.

    Not ``points @ R.T``: a matrix product with an inner size of 3 goes to the threaded BLAS,
    which measured 5x slower than this on a loaded 2-core machine.
    """
    R, t = T[:3, :3].astype(points.dtype), T[:3, 3].astype(points.dtype)
    out = np.empty_like(points)
    for i in range(3):
        out[:, i] = points[:, 0] * R[i, 0] + points[:, 1] * R[i, 1] + points[:, 2] * R[i, 2] + t[i]
    return out


UP_AXES = ("+x", "-x", "+y", "-y", "+z", "-z")


def up_axis_of(T_fixed_cam: np.ndarray, setting: str = "auto") -> str:
    """The fixed frame's up by ``map.up_axis``'s rule: the axis ``setting`` names, or (``auto``) the one nearest
    to a camera's up, -y of its optical frame."""
    if setting != "auto":
        return setting
    up = -np.asarray(T_fixed_cam, np.float64)[:3, 1]
    i = int(np.argmax(np.abs(up)))
    return ("+" if up[i] > 0 else "-") + "xyz"[i]


def gravity_rotation(up_axis: str) -> np.ndarray:
    """4x4 T_map_fixed: the smallest rotation taking the fixed frame's ``up_axis`` (one of UP_AXES) to +z.

    +z: the identity; -z: half a turn about x; a horizontal axis u: a quarter turn about u x z,
    so the other horizontal axis stays where it is.
    """
    if up_axis not in UP_AXES:
        raise ValueError(f"up axis {up_axis!r} is not one of {', '.join(UP_AXES)}")
    u = np.zeros(3)
    u["xyz".index(up_axis[1])] = 1.0 if up_axis[0] == "+" else -1.0
    T = np.eye(4)
    if u[2] < 0:
        T[:3, :3] = np.diag([1.0, -1.0, -1.0])
    elif u[2] == 0:
        a = np.cross(u, [0.0, 0.0, 1.0])  # a unit axis: u is perpendicular to z
        K = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
        T[:3, :3] = np.eye(3) + K + K @ K  # Rodrigues at 90 degrees
    return T


def pose_problem(T: np.ndarray | None) -> str | None:
    """Why a 4x4 camera pose cannot place a frame in the map, or None."""
    if T is None:
        return "no pose"
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        return "non-finite pose"
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        return "pose not rigid"
    return None


class WorldMap:
    """Clamped log-odds occupancy in a rolling window around the vehicle (see the module text)."""

    def __init__(self, cfg: MapConfig):
        self.cfg = cfg
        self.resolution = float(cfg.resolution)
        self.shape = cfg.window_cells()  # (nz, ny, nx)
        self.log_odds = np.zeros(self.shape, np.float32)
        self._mark = np.zeros(int(np.prod(self.shape)), np.uint8)  # per-frame scratch, always zero between calls
        self._offsets: dict[tuple, np.ndarray] = {}
        self.origin: np.ndarray | None = None  # world voxel index (x, y, z) of log_odds[0, 0, 0]
        self.camera: np.ndarray | None = None  # last camera position in the fixed frame
        self.last_stamp_ns: int | None = None
        self._pending_decay = 0.0
        self.frames = 0  # frames fused
        self.skipped: Counter[str] = Counter()
        self.resets: Counter[str] = Counter()
        self.tilted = 0

    # ------------------------------------------------------------------ state

    def reset(self, reason: str) -> None:
        """Forget everything (all cells unknown), counted in ``resets`` by reason; the next frame places the window
        anew."""
        self.log_odds[...] = 0.0
        self.origin, self.camera, self.last_stamp_ns, self._pending_decay = None, None, None, 0.0
        self.resets[reason] += 1

    def status(self) -> MapStatus:
        """Counters for diagnostics: fused, skipped by reason, resets by reason, known and occupied cells."""
        return {
            "frames": self.frames,
            "skipped": dict(self.skipped),
            "resets": dict(self.resets),
            "tilted": self.tilted,
            "known": self.known_cells(),
            "occupied": int((self.log_odds > 0).sum()),
        }

    def known_cells(self) -> int:
        """Cells observed (and not decayed back to unknown)."""
        return int(np.count_nonzero(self.log_odds))

    def nbytes(self) -> int:
        """Bytes held by the window (log-odds and scratch); constant for a configuration."""
        return self.log_odds.nbytes + self._mark.nbytes

    # ------------------------------------------------------------------ fusion

    def integrate(
        self,
        density: np.ndarray,
        unseen: np.ndarray,
        spec: GridSpec,
        T_fixed_cam: np.ndarray | None,
        occupied_density: float,
        stamp_ns: int | None = None,
    ) -> str | None:
        """Fuse one frame's density grid (spec.shape, camera frame), its cells where ``unseen`` left out.

        Returns None when fused, else the reason it was skipped (also counted in ``skipped``).

        Grid cells to voxels: each cell is sampled at points no farther apart than the map's
        resolution along each grid axis (its centre alone when the cell is no larger than a voxel,
        a k x k x k lattice inside it when it is k voxels wide), the samples are placed in the fixed
        frame and binned into voxels. A voxel gets one update per frame however many samples fall
        in it: a hit when any of them is occupied (density above ``occupied_density``), else a miss,
        as octomap lets occupied endpoints win over free space within one scan. So the update rate
        does not depend on the grid's cell size, and a coarse grid leaves no holes in a fine map.
        """
        density, unseen = np.asarray(density, np.float32), np.asarray(unseen, bool)
        if density.shape != spec.shape:
            return self.skip(f"density shape {density.shape} is not the grid's {spec.shape}")
        if unseen.shape != spec.shape:
            return self.skip(f"unseen mask shape {unseen.shape} is not the grid's {spec.shape}")
        reason = pose_problem(T_fixed_cam)
        if reason is None and not np.isfinite(density[~unseen]).all():
            reason = "non-finite density"
        if reason:
            return self.skip(reason)
        T = np.asarray(T_fixed_cam, np.float64)
        self._advance(stamp_ns, T)
        seen = ~unseen.reshape(-1)
        occupied = (density.reshape(-1) > occupied_density)[seen]
        centres = self._centres32(spec)[seen]
        offsets = self._cell_offsets(spec)
        if len(offsets) > 1:
            centres = (centres[:, None, :] + offsets[None]).reshape(-1, 3)
            occupied = np.repeat(occupied, len(offsets))
        flat, inside = self._flat_index(transform(self._to_window(T), centres), local=True)
        self._update(flat[inside], occupied[inside])
        self.frames += 1
        return None

    def fuse_samples(
        self,
        T_fixed_cam: np.ndarray | None,
        samples: Iterable[tuple[np.ndarray, np.ndarray]],
        stamp_ns: int | None = None,
        check_tilt: bool = True,
    ) -> str | None:
        """Fuse fixed-frame sample points as one frame seen from the pose ``T_fixed_cam``.

        ``samples`` yields chunks of points (N, 3) and whether each is occupied (N,); it is read
        only once the pose was accepted and the window placed, so a generator may make the chunks
        one at a time (the float samples of long rays are never all held at once). Each voxel gets
        one update over all chunks, a hit when any of its samples is occupied, as in
        :meth:`integrate`. Returns None when fused, else the reason it was skipped.
        ``check_tilt``: count a pose whose camera y is not down (off for sensors that are not
        cameras).
        """
        reason = pose_problem(T_fixed_cam)
        if reason:
            return self.skip(reason)
        self._advance(stamp_ns, np.asarray(T_fixed_cam, np.float64), check_tilt)
        flats, hits = [np.zeros(0, np.int64)], [np.zeros(0, bool)]
        for points, occupied in samples:
            flat, inside = self._flat_index(points)
            flats.append(flat[inside])
            hits.append(np.asarray(occupied, bool)[inside])
        self._update(np.concatenate(flats), np.concatenate(hits))
        self.frames += 1
        return None

    def skip(self, reason: str) -> str:
        """Count a frame not fused under ``reason``; returns the reason."""
        self.skipped[reason] += 1
        return reason

    # ------------------------------------------------------------------ outputs

    def occupied_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Fixed-frame centres (N, 3) of the occupied voxels (probability above 0.5) and their probabilities."""
        if self.origin is None:
            return np.zeros((0, 3)), np.zeros(0, np.float32)
        flat = np.flatnonzero(self.log_odds > 0)
        L = self.log_odds.reshape(-1)[flat]
        return self._voxel_centres(flat), (1.0 / (1.0 + np.exp(-L))).astype(np.float32)

    # ------------------------------------------------------------------ internals

    def _voxel_centres(self, flat: np.ndarray) -> np.ndarray:
        """Fixed-frame centres (N, 3) of window cells given by flat index."""
        assert self.origin is not None  # cells exist once a frame placed the window
        iz, iy, ix = np.unravel_index(flat, self.shape)
        return (np.stack([ix, iy, iz], -1) + self.origin + 0.5) * self.resolution

    def _advance(self, stamp_ns: int | None, T: np.ndarray, check_tilt: bool = True) -> None:
        """Decay over the elapsed time (none when the stamp went back), window placement for a frame about to be
        fused."""
        cfg = self.cfg
        if stamp_ns is not None and self.last_stamp_ns is not None:
            dt = (stamp_ns - self.last_stamp_ns) * 1e-9
            if dt > 0 and cfg.decay_per_s > 0:
                self._pending_decay += cfg.decay_per_s * dt
                if self._pending_decay >= DECAY_STEP:
                    self._decay(self._pending_decay)
                    self._pending_decay = 0.0
        if stamp_ns is not None:
            self.last_stamp_ns = int(stamp_ns)
        if check_tilt and T[2, 1] > -0.5:  # camera y (down) more than 60 deg from the fixed frame's -z
            self.tilted += 1
        self.camera = T[:3, 3].copy()
        self._place(self.camera)

    def _decay(self, amount: float) -> None:
        """Move every cell ``amount`` log-odds towards 0 (unknown), layer by layer (small temporaries)."""
        for layer in self.log_odds:
            np.copysign(np.maximum(np.abs(layer) - np.float32(amount), 0.0), layer, out=layer)

    def _place(self, position: np.ndarray) -> None:
        """Centre the window on ``position`` first, then whenever it drifts past the margin; shift the contents."""
        n = np.array(self.shape[::-1])  # (nx, ny, nz)
        voxel = np.floor(position / self.resolution).astype(np.int64)
        if self.origin is None:
            self.origin = voxel - n // 2
            return
        offset = voxel - (self.origin + n // 2)
        if (np.abs(offset) <= self.cfg.recentre_margin * n).all():
            return
        for axis, d in zip((2, 1, 0), offset):  # array axes of x, y, z
            self._shift(axis, int(d))
        self.origin = self.origin + offset

    def _shift(self, axis: int, d: int) -> None:
        """new[a] = old[a + d] along an array axis; cells that come in are unknown."""
        if d == 0:
            return
        a, n = self.log_odds, self.log_odds.shape[axis]
        if abs(d) >= n:
            a[...] = 0.0
            return
        src, dst, vacated = ([slice(None)] * 3 for _ in range(3))
        if d > 0:
            dst[axis], src[axis], vacated[axis] = slice(0, n - d), slice(d, n), slice(n - d, n)
        else:
            dst[axis], src[axis], vacated[axis] = slice(-d, n), slice(0, n + d), slice(0, -d)
        a[tuple(dst)] = a[tuple(src)]  # numpy copies overlapping views correctly
        a[tuple(vacated)] = 0.0

    def _centres32(self, spec: GridSpec) -> np.ndarray:
        """The grid's cell centres (N, 3) in the camera frame as float32, kept for the last spec."""
        if getattr(self, "_centres_key", None) != spec:
            self._centres_key, self._centres = spec, spec.centres_cam().reshape(-1, 3).astype(np.float32)
        return self._centres

    def _cell_offsets(self, spec: GridSpec) -> np.ndarray:
        """Sample offsets (K, 3) in the camera frame inside a grid cell, no farther apart than a voxel."""
        key = (spec.resolution, spec.resolution_z, self.resolution)
        if key not in self._offsets:
            axes = []
            for size in (spec.resolution, spec.resolution, spec.resolution_z):  # grid x, y, z
                k = max(1, math.ceil(size / self.resolution - 1e-9))
                axes.append(((np.arange(k) + 0.5) / k - 0.5) * size)
            gx, gy, gz = np.meshgrid(*axes, indexing="ij")
            self._offsets[key] = (np.stack([gx, gy, gz], -1).reshape(-1, 3) @ R_CAM_GRID.T).astype(np.float32)
        return self._offsets[key]

    def _to_window(self, T: np.ndarray) -> np.ndarray:
        """``T`` followed by the shift from the fixed frame to the window's corner (float64, so float32
        points stay exact to far below a voxel however far the fixed frame's origin is)."""
        assert self.origin is not None  # called while fusing, after _place
        W = np.array(T, np.float64)
        W[:3, 3] -= self.origin * self.resolution
        return W

    def _flat_index(self, points: np.ndarray, local: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Flat window index of each point (fixed frame, or window-corner frame with ``local``) and whether
        it lies inside the window."""
        nz, ny, nx = self.shape
        scale = np.float32(1.0 / self.resolution) if points.dtype == np.float32 else 1.0 / self.resolution
        if local:
            shift = np.zeros(3, np.int64)
        else:
            assert self.origin is not None  # fixed-frame points are indexed after _place
            shift = self.origin
        ax, ay, az = (np.floor(points[:, i] * scale).astype(np.int64) - shift[i] for i in range(3))
        inside = (ax >= 0) & (ax < nx) & (ay >= 0) & (ay < ny) & (az >= 0) & (az < nz)
        return (az * ny + ay) * nx + ax, inside

    def _update(self, flat: np.ndarray, occupied: np.ndarray) -> None:
        """One clamped log-odds update per voxel: a hit if any of its samples is occupied, else a miss.

        Duplicate indices are harmless: each copy reads the same old value and mark and writes
        the same new value.
        """
        if len(flat) == 0:
            return
        cfg, mark, L = self.cfg, self._mark, self.log_odds.reshape(-1)
        mark[flat[~occupied]] = 1
        mark[flat[occupied]] = 2
        delta = np.where(mark[flat] == 2, np.float32(logit(cfg.prob_hit)), np.float32(logit(cfg.prob_miss)))
        L[flat] = np.clip(L[flat] + delta, logit(cfg.clamp_min), logit(cfg.clamp_max))
        mark[flat] = 0
