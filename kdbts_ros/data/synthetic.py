"""Deterministic procedural street scene (KITTI-360-like) with exact depth and occupancy.

Conventions:
  * World frame (REP 103): z up, x forward along the street, y left. The street runs along +x
    from x = -10 for ``SceneConfig.length_m`` metres; the road spans |y| < road_half_width_m.
  * Camera poses are 4x4 camera-to-world matrices of an OPTICAL frame: x right, y down, z forward.
  * K is a 3x3 pixel intrinsic matrix in the OpenCV convention: a camera point (x, y, z) projects
    to u = fx*x/z + cx, v = fy*y/z + cy, where integer u (v) is the CENTRE of pixel column u
    (row v); pixel (0, 0)'s centre is at u = v = 0. render() casts one ray per pixel centre.
  * Depth is z-depth (along the camera z axis), not Euclidean ray length.

All solids are axis-aligned boxes plus the ground half-space z < 0, so ray casting (slab method)
and occupancy are exact and agree with each other to float precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdbts_ros.data.rig import R_BASE_OPTICAL, base_trajectory

# Box materials; the ground half-space is material -1 and sky is "no hit" (id -2).
GROUND, BUILDING, CAR_BODY, CAR_CABIN, SIDEWALK, POLE, FOLIAGE, OCCLUDER = range(-1, 7)
_SUN = np.array([0.45, 0.6, 0.66]) / np.linalg.norm([0.45, 0.6, 0.66])  # from the front-left, high
_SKY_HORIZON = np.array([0.80, 0.86, 0.92])
_SKY_ZENITH = np.array([0.30, 0.50, 0.82])
_FACADE_PALETTE = np.array(
    [
        [0.78, 0.72, 0.62],
        [0.70, 0.52, 0.42],
        [0.82, 0.80, 0.76],
        [0.60, 0.58, 0.55],
        [0.85, 0.76, 0.55],
        [0.55, 0.45, 0.40],
    ]
)
_CAR_PALETTE = np.array(
    [
        [0.75, 0.10, 0.10],
        [0.12, 0.20, 0.55],
        [0.85, 0.85, 0.85],
        [0.15, 0.15, 0.17],
        [0.55, 0.57, 0.60],
        [0.20, 0.45, 0.25],
        [0.90, 0.75, 0.20],
    ]
)


@dataclass(frozen=True)
class SceneConfig:
    """Layout parameters of the procedural street; the same config always gives the same scene."""

    seed: int = 0
    length_m: float = 120.0  # street length along +x starting at x=-10
    road_half_width_m: float = 5.0
    sidewalk_width_m: float = 3.0
    sidewalk_height_m: float = 0.15  # <= 0 removes the raised sidewalk boxes
    building_setback_m: float = 2.0  # max random extra gap between sidewalk and facade
    building_fill: float = 0.9  # probability that a facade slot holds a building (0: none)
    building_height_m: tuple[float, float] = (6.0, 24.0)
    building_depth_m: tuple[float, float] = (6.0, 15.0)
    n_cars: int = 20  # parked cars, spread over both curbs
    n_poles: int = 8
    n_trees: int = 10
    n_occluders: int = 6  # kiosks, bins, bus shelters on the sidewalk


def _frac(x: np.ndarray) -> np.ndarray:
    """Fractional part in [0, 1), also for negative inputs."""
    return np.mod(x, 1.0)


def _hash(cells: np.ndarray) -> np.ndarray:
    """Deterministic per-integer-cell pseudo-random value in [0, 1) for (M, 3) cell indices."""
    c = cells.astype(np.int64)
    h = (c[:, 0] * 73856093) ^ (c[:, 1] * 19349663) ^ (c[:, 2] * 83492791)  # wraps, on purpose
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).astype(np.float64) / 65536.0


class StreetScene:
    """Street of axis-aligned boxes over the ground plane z = 0, built deterministically."""

    def __init__(self, config: SceneConfig = SceneConfig()) -> None:
        """Lay out sidewalks, buildings, parked cars, poles, trees and occluders from config.seed."""
        self.config = config
        rows: list[tuple[float, ...]] = []
        self._layout(np.random.default_rng(config.seed), rows)
        a = np.asarray(rows, dtype=np.float64).reshape(-1, 10)
        self.box_min: np.ndarray = a[:, 0:3].copy()
        self.box_max: np.ndarray = a[:, 3:6].copy()
        self.box_color: np.ndarray = a[:, 6:9].copy()
        self.box_material: np.ndarray = a[:, 9].astype(np.int64)

    def _layout(self, rng: np.random.Generator, rows: list[tuple[float, ...]]) -> None:
        """Append (min xyz, max xyz, rgb, material) rows for every solid of the scene."""
        c = self.config
        x0, x1, rw = -10.0, -10.0 + c.length_m, c.road_half_width_m
        outer = rw + c.sidewalk_width_m

        def add(lo: tuple[float, float, float], hi: tuple[float, float, float], rgb: np.ndarray, mat: int) -> None:
            # y bounds are given per side and may be swapped for the right (y < 0) side.
            (ax, ay, az), (bx, by, bz) = lo, hi
            rows.append(
                (
                    min(ax, bx),
                    min(ay, by),
                    min(az, bz),
                    max(ax, bx),
                    max(ay, by),
                    max(az, bz),
                    *np.clip(rgb, 0.0, 1.0),
                    float(mat),
                )
            )

        for s in (1.0, -1.0):  # left then right side of the street
            if c.sidewalk_height_m > 0:
                add((x0, s * rw, 0.0), (x1, s * outer, c.sidewalk_height_m), np.array([0.62, 0.61, 0.58]), SIDEWALK)
            x = x0
            while x < x1 and c.building_fill > 0:
                w = rng.uniform(6.0, 18.0)
                y_in = outer + rng.uniform(0.0, c.building_setback_m)
                depth, height = rng.uniform(*c.building_depth_m), rng.uniform(*c.building_height_m)
                rgb = _FACADE_PALETTE[rng.integers(len(_FACADE_PALETTE))] * rng.uniform(0.85, 1.1)
                if rng.random() < c.building_fill:
                    add((x, s * y_in, 0.0), (min(x + w, x1), s * (y_in + depth), height), rgb, BUILDING)
                x += w + rng.uniform(0.0, 2.5)

        # Parked cars: one per chosen 6.5 m curb slot so they never overlap.
        slot = 6.5
        n_slot = max(int(c.length_m // slot), 0)
        slots = [(s, k) for s in (1.0, -1.0) for k in range(n_slot)]
        for i in rng.permutation(len(slots))[: min(c.n_cars, len(slots))]:
            s, k = slots[i]
            length, width = rng.uniform(3.8, 4.8), rng.uniform(1.65, 1.9)
            xc = x0 + (k + 0.5) * slot + rng.uniform(-0.6, 0.6)
            y_curb = rw - rng.uniform(0.15, 0.4)
            rgb = _CAR_PALETTE[rng.integers(len(_CAR_PALETTE))] * rng.uniform(0.85, 1.1)
            van = rng.random() < 0.15
            h_body = rng.uniform(1.7, 2.0) if van else rng.uniform(0.8, 0.95)
            add((xc - length / 2, s * (y_curb - width), 0.0), (xc + length / 2, s * y_curb, h_body), rgb, CAR_BODY)
            if not van:  # cabin set back from both ends, slightly narrower than the body
                front, back = rng.uniform(0.9, 1.3), rng.uniform(0.5, 0.9)
                add(
                    (xc - length / 2 + back, s * (y_curb - width + 0.1), h_body),
                    (xc + length / 2 - front, s * (y_curb - 0.1), h_body + rng.uniform(0.45, 0.6)),
                    rgb,
                    CAR_CABIN,
                )

        # Sidewalk furniture: one item per chosen 4 m slot, at type-specific distances from the curb.
        n_slot = max(int(c.length_m // 4.0), 0)
        slots = [(s, k) for s in (1.0, -1.0) for k in range(n_slot)]
        kinds = [POLE] * c.n_poles + [FOLIAGE] * c.n_trees + [OCCLUDER] * c.n_occluders
        for i, kind in zip(rng.permutation(len(slots)), kinds):
            s, k = slots[i]
            xc = x0 + (k + 0.5) * 4.0 + rng.uniform(-0.5, 0.5)
            if kind == POLE:
                yc, h = rw + 0.5, rng.uniform(4.5, 7.0)
                add(
                    (xc - 0.09, s * (yc - 0.09), 0.0),
                    (xc + 0.09, s * (yc + 0.09), h),
                    np.array([0.45, 0.46, 0.48]),
                    POLE,
                )
            elif kind == FOLIAGE:
                yc, h = rw + 1.3, rng.uniform(2.5, 3.5)
                add(
                    (xc - 0.15, s * (yc - 0.15), 0.0),
                    (xc + 0.15, s * (yc + 0.15), h),
                    np.array([0.40, 0.30, 0.20]),
                    POLE,
                )
                r, top = rng.uniform(1.0, 1.6), h + rng.uniform(2.0, 3.5)
                add(
                    (xc - r, s * (yc - r), h - 0.3),
                    (xc + r, s * (yc + r), top),
                    np.array([0.25, 0.50, 0.20]) * rng.uniform(0.8, 1.15),
                    FOLIAGE,
                )
            else:
                yc, ln = rw + 2.0, rng.uniform(0.6, 2.5)
                wd, h = rng.uniform(0.5, 1.2), rng.uniform(0.8, 2.2)
                add(
                    (xc - ln / 2, s * (yc - wd / 2), 0.0),
                    (xc + ln / 2, s * (yc + wd / 2), h),
                    rng.uniform(0.2, 0.9, size=3),
                    OCCLUDER,
                )

    def occupied(self, points_world: np.ndarray) -> np.ndarray:
        """Exact occupancy (bool, shape (N,)) of world points (N,3): inside any solid (ground below z=0 counts as
        solid).
        """
        p = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
        # Sort by x so each box only tests the points inside its x-slab: cost ~ N * (boxes
        # overlapping a typical x) instead of N * all boxes, and memory stays O(N).
        order = np.argsort(p[:, 0], kind="stable")
        ps = p[order]
        occ = ps[:, 2] < 0.0
        first = np.searchsorted(ps[:, 0], self.box_min[:, 0], side="right")  # x > min
        last = np.searchsorted(ps[:, 0], self.box_max[:, 0], side="left")  # x < max
        for b in np.nonzero(last > first)[0]:
            q = ps[first[b] : last[b], 1:]
            occ[first[b] : last[b]] |= ((q > self.box_min[b, 1:]) & (q < self.box_max[b, 1:])).all(1)
        out = np.empty_like(occ)
        out[order] = occ
        return out

    def _screen_rects(
        self, rot: np.ndarray, origin: np.ndarray, K: np.ndarray, width: int, height: int
    ) -> list[tuple[int, int, int, int, int]]:
        """Conservative pixel rectangles (box, v0, v1, u0, u1) that can see each box."""
        sel = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=bool)
        corners = np.where(sel[None], self.box_max[:, None], self.box_min[:, None])  # (B, 8, 3)
        pc = (corners - origin) @ rot  # world -> camera: R^T (p - o), as row vectors
        z = pc[..., 2]
        rects = []
        uvw = pc @ K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = uvw[..., 0] / z, uvw[..., 1] / z
        for b in range(len(pc)):
            if (z[b] <= 0).all():
                continue  # hits have positive z-depth, so a box behind the camera is invisible
            if (z[b] <= 1e-6).any():  # straddles the camera plane: projection unbounded
                rects.append((b, 0, height, 0, width))
                continue
            # The projection of a convex box in front of the camera lies in its corners' hull.
            u0, u1 = max(int(np.floor(u[b].min())), 0), min(int(np.ceil(u[b].max())) + 1, width)
            v0, v1 = max(int(np.floor(v[b].min())), 0), min(int(np.ceil(v[b].max())) + 1, height)
            if u0 < u1 and v0 < v1:
                rects.append((b, v0, v1, u0, u1))
        return rects

    def render(self, cam_to_world: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 (H,W,3) and z-depth float32 (H,W) in metres along the camera z axis; np.inf where the ray hits
        nothing (sky).
        """
        T, K = np.asarray(cam_to_world, np.float64), np.asarray(K, np.float64)
        rot, origin = T[:3, :3], T[:3, 3]
        u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        pix = np.stack([u, v, np.ones_like(u)], -1)
        d_cam = pix @ np.linalg.inv(K).T
        d_cam /= d_cam[..., 2:3]  # camera z = 1, so the ray parameter t is the z-depth
        d = d_cam @ rot.T  # (H, W, 3) world directions
        d32 = d.astype(np.float32)
        inv = 1.0 / np.copysign(np.maximum(np.abs(d32), 1e-12), d32)  # avoids 0 * inf = nan in slabs
        depth = np.full((height, width), np.inf, np.float32)
        ids = np.full((height, width), -2, np.int32)
        axis = np.full((height, width), 2, np.int8)
        if origin[2] > 0:  # ground half-space z < 0
            down = d[..., 2] < 0
            depth[down] = (-origin[2] / d[..., 2][down]).astype(np.float32)
            ids[down] = -1
        lo = (self.box_min - origin).astype(np.float32)
        hi = (self.box_max - origin).astype(np.float32)
        for b, v0, v1, u0, u1 in self._screen_rects(rot, origin, K, width, height):
            ib = inv[v0:v1, u0:u1]
            t1, t2 = ib * lo[b], ib * hi[b]
            tmin = np.minimum(t1, t2)
            tn, tf = tmin.max(-1), np.maximum(t1, t2).min(-1)
            dsub = depth[v0:v1, u0:u1]
            hit = (tn < tf) & (tn > 0) & (tn < dsub)  # strict: grazing an edge is not a hit
            if hit.any():
                dsub[hit] = tn[hit]
                ids[v0:v1, u0:u1][hit] = b
                axis[v0:v1, u0:u1][hit] = tmin[hit].argmax(-1)  # entry slab = face normal axis
        rgb = self._shade(origin, d, depth, ids, axis)
        return rgb, depth

    def _shade(
        self, origin: np.ndarray, d: np.ndarray, depth: np.ndarray, ids: np.ndarray, axis: np.ndarray
    ) -> np.ndarray:
        """Textured Lambertian colour for hits, distance fog, and a vertical-gradient sky."""
        elev = d[..., 2] / np.linalg.norm(d, axis=-1)
        t = np.clip(elev, 0.0, 1.0)[..., None] ** 0.7
        img = _SKY_HORIZON * (1 - t) + _SKY_ZENITH * t
        m = ids > -2
        if m.any():
            dh, th, idh, ax = d[m], depth[m].astype(np.float64), ids[m], axis[m].astype(np.int64)
            p = origin + dh * th[:, None]
            n = np.zeros_like(p)
            rows = np.arange(len(p))
            n[rows, ax] = -np.sign(dh[rows, ax])  # the entered face faces against the ray
            obj = idh >= 0
            mat, base = np.full(len(p), GROUND), np.zeros_like(p)
            mat[obj], base[obj] = self.box_material[idh[obj]], self.box_color[idh[obj]]
            col = self._texture(p, n, mat, base)
            col *= (0.38 + 0.62 * np.clip(n @ _SUN, 0.0, None))[:, None]
            fog = 1.0 - np.exp(-th * np.linalg.norm(dh, axis=-1) / 400.0)
            img[m] = col * (1 - fog[:, None]) + _SKY_HORIZON * fog[:, None]
        return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def _texture(self, p: np.ndarray, n: np.ndarray, mat: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Procedural albedo from world hit points: lane marks, windows, tiles, foliage, noise."""
        col = base.copy()
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        rw = self.config.road_half_width_m
        # two octaves of blocky value noise (1/6 m and 1/2 m cells): every surface gets texture that
        # photometric matching can lock onto, as real asphalt, paint and plaster have
        noise = 0.5 * _hash(np.floor(p * 6.0)) + 0.5 * _hash(np.floor(p * 2.0) + 7919)
        up, side = n[:, 2] > 0.5, np.abs(n[:, 2]) < 0.5
        g = mat == GROUND
        col[g] = (0.38, 0.42, 0.30)  # verge / gaps between buildings
        road = g & (np.abs(y) < rw)
        col[road] = 0.30
        marks = road & (((np.abs(y) < 0.07) & (_frac(x / 6.0) < 0.5)) | (np.abs(np.abs(y) - (rw - 0.3)) < 0.07))
        col[marks] = (0.88, 0.88, 0.82)
        b = mat == BUILDING
        along = np.where(np.abs(n[:, 0]) > 0.5, y, x)  # horizontal coordinate on a vertical face (facades, cars)
        win = b & side & (z > 2.2) & (np.abs(_frac(along / 2.6) - 0.5) < 0.25) & (np.abs(_frac(z / 3.2) - 0.55) < 0.22)
        cell = np.stack([np.floor(along / 2.6), np.floor(z / 3.2), np.zeros_like(z)], -1)
        col[win] = np.array([0.14, 0.18, 0.26]) + 0.18 * _hash(cell[win])[:, None]
        col[b & up] *= 0.6
        car = (mat == CAR_BODY) | (mat == CAR_CABIN)
        seam = np.abs(_frac(along / 1.1) - 0.5) > 0.46
        col[car & seam] *= 0.35  # door seams / window pillars
        col[(mat == CAR_BODY) & (np.abs(z - 0.62) < 0.04)] = (0.80, 0.80, 0.78)  # chrome trim line
        col[(mat == CAR_BODY) & (z < 0.3)] = (0.07, 0.07, 0.07)  # wheels / shadowed sills
        glass = (mat == CAR_CABIN) & side & ~seam
        col[glass] = np.array([0.22, 0.28, 0.36]) + 0.25 * _hash(np.floor(p[glass] * 3.0))[:, None]  # sky reflections
        tiles = (mat == SIDEWALK) & up & ((_frac(x) < 0.05) | (_frac(y) < 0.05))
        col[tiles] *= 0.8
        f = mat == FOLIAGE
        col[f] *= (0.6 + 0.8 * _hash(np.floor(p[f] * 2.5)))[:, None]
        oc = (mat == OCCLUDER) & (_frac(z * 2.5) < 0.5)
        col[oc] *= 0.7
        # cars get twice the contrast: at street distances they are a few pixels tall, and real ones
        # carry edges, reflections and plates that fix their depth in photometric matching
        return col * np.where(car, 0.4 + 1.2 * noise, 0.7 + 0.6 * noise)[:, None]


def street_trajectory(
    n_frames: int,
    step_m: float = 1.0,
    camera_height_m: float = 1.55,
    lateral_offset_m: float = -1.5,
    start_x: float = 0.0,
    yaw_wobble_rad: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """(n_frames, 4, 4) camera-to-world poses of a forward-looking optical camera driving along +x (camera z = world +x,
    camera x = world -y, camera y = world -z).
    """
    poses = base_trajectory(n_frames, step_m, lateral_offset_m, start_x, yaw_wobble_rad, seed)
    poses[:, :3, :3] = poses[:, :3, :3] @ R_BASE_OPTICAL  # base_link -> forward optical camera
    poses[:, 2, 3] = camera_height_m
    return poses
