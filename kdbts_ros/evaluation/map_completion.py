"""Scene completion of the fused world map against accumulated velodyne scans (issue 18, part 3).

A real recording's frames run through the :class:`FrameRunner` one by one. Two maps are fused with
the same :class:`WorldMap` update: (i) KDBTS, each frame's density grid (occluded cells included);
(ii) depth only, each frame's expected depth image cast as rays (surface hit, free before it),
what a depth network alone would give. The truth is a third map of the velodyne scans cast as
rays from the scanner (a return is a hit, the space before it free). Rays: :mod:`kdbts_ros.evaluation.ray_fusion`.

Evaluated region (the mask): the voxels of the camera grid's volume that some processed frame
saw (inside the image, within the grid), and, for precision, that the lidar observed (hit or
passed through). Precision: predicted-occupied voxels that the lidar found occupied, over the
predicted-occupied voxels the lidar observed. Recall: lidar-occupied voxels of the region that
the map predicts occupied. Both are given for all voxels and above the ground (voxels higher than
``ground_clearance`` over the road, the road taken ``camera_height`` below the first camera).
Known per metre: voxels of the region with an opinion (free or occupied) per metre driven.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kdbts_ros.core.config import MapConfig
from kdbts_ros.core.frames import Frame
from kdbts_ros.core.report_paths import report_path
from kdbts_ros.core.world_map import WorldMap
from kdbts_ros.data.records import DatasetError, Recording, read_velodyne
from kdbts_ros.evaluation.ray_fusion import integrate_depth, integrate_points
from kdbts_ros.runtime.config import RunnerConfig
from kdbts_ros.runtime.legends import swatch_legend, with_legend
from kdbts_ros.runtime.runner import FrameRunner


@dataclass
class MapEvalSettings:
    """Map and region of the comparison."""

    resolution: float = 0.2
    extent_xy: float = 100.0  # one window around the first camera holds the whole (short) drive
    extent_z: float = 8.0
    max_range: float = 40.0  # depth and lidar rays are cut here (no hit beyond)
    camera_height: float = 1.65  # KITTI: camera above the road
    ground_clearance: float = 0.3
    band: tuple[float, float] = (0.3, 2.5)  # pictures: height band over the road shown top-down
    lidar_stride: int = 1
    max_frames: int = 0  # 0: every posed frame
    cam: int = 0
    # the camera grid: 18 m across, 3..23 m ahead, from 1 m above the camera down to 0.2 m below the road
    grid: dict = field(
        default_factory=lambda: {
            "grid.x_min": -9.0,
            "grid.x_max": 9.0,
            "grid.z_min": 3.0,
            "grid.z_max": 23.0,
            "grid.y_min": -1.0,
            "grid.y_max": 1.8,
            "grid.resolution": 0.2,
            "grid.height_levels": 14,
        }
    )


def world_keys(m: WorldMap, mask: np.ndarray) -> np.ndarray:
    """Sorted int64 keys of the world voxels where ``mask`` (window-shaped) holds: maps with different windows
    compare.
    """
    assert m.origin is not None, "world_keys of a map that never integrated anything"
    iz, iy, ix = np.nonzero(mask)
    w = np.stack([ix, iy, iz], -1) + m.origin + (1 << 20)
    return np.sort((w[:, 0] << 42) | (w[:, 1] << 21) | w[:, 2])


def key_z(keys: np.ndarray, resolution: float) -> np.ndarray:
    """Fixed-frame height of each voxel key's centre."""
    return ((keys & ((1 << 21) - 1)) - (1 << 20) + 0.5) * resolution


def scores(
    pred: WorldMap,
    lidar: WorldMap,
    region: np.ndarray,
    ground_z: float,
    clearance: float,
    resolution: float,
    metres: float,
) -> dict[str, float]:
    """Precision, recall (all and above ground) and known voxels per metre of one map in the region."""
    occupied = np.intersect1d(world_keys(pred, pred.log_odds > 0), region)
    known = np.intersect1d(world_keys(pred, pred.log_odds != 0), region)
    lidar_known = np.intersect1d(world_keys(lidar, lidar.log_odds != 0), region)
    lidar_occupied = np.intersect1d(world_keys(lidar, lidar.log_odds > 0), region)
    out: dict[str, float] = {}
    for name, keep in (
        ("", lambda k: np.ones(len(k), bool)),
        ("_above_ground", lambda k: key_z(k, resolution) > ground_z + clearance),
    ):
        occ, lk, lo = occupied[keep(occupied)], lidar_known[keep(lidar_known)], lidar_occupied[keep(lidar_occupied)]
        judged = np.intersect1d(occ, lk)
        tp = np.intersect1d(judged, lo)
        out[f"precision{name}"] = len(tp) / max(len(judged), 1)
        out[f"recall{name}"] = len(np.intersect1d(occ, lo)) / max(len(lo), 1)
        out[f"predicted_occupied{name}"] = len(occ)
        out[f"lidar_occupied{name}"] = len(lo)
    out["known_in_region"] = len(known)
    out["known_share"] = len(known) / max(len(region), 1)
    out["known_per_metre"] = len(known) / max(metres, 1e-6)
    out["known_share_per_metre"] = out["known_share"] / max(metres, 1e-6)
    out["known_anywhere"] = pred.known_cells()
    return out


# the top-down pictures' colours (BGR), and their legend
OCCUPIED_BGR, FREE_BGR, UNKNOWN_BGR = (20, 20, 20), (235, 235, 235), (128, 128, 128)
LIDAR_BGR, TRACK_BGR = (0, 0, 255), (255, 128, 0)
MAP_LEGEND = swatch_legend(
    [
        (OCCUPIED_BGR, "occupied"),
        (FREE_BGR, "free"),
        (UNKNOWN_BGR, "unknown"),
        (LIDAR_BGR, "lidar occupied (tint)"),
        (TRACK_BGR, "camera track"),
        ((104, 104, 104), "outside the scored region (dimmed)"),
    ]
)


def top_down(
    m: WorldMap,
    lidar_occupied: np.ndarray,
    region2d: np.ndarray,
    band: tuple[float, float],
    track: np.ndarray,
    label: str,
    scale: int = 3,
) -> np.ndarray:
    """BGR bird's-eye picture of a map's band: black occupied, white free, grey unknown, lidar red, outside
    region dim.
    """
    assert m.origin is not None, "top_down of a map that never integrated anything"
    r, (nz, ny, nx) = m.resolution, m.shape
    lo = max(0, int(np.floor(band[0] / r)) - m.origin[2])
    hi = min(nz, int(np.floor(band[1] / r)) - m.origin[2] + 1)
    L = m.log_odds[lo:hi]
    img: np.ndarray = np.full((ny, nx, 3), UNKNOWN_BGR, np.uint8)
    img[(L < 0).any(0) & ~(L > 0).any(0)] = FREE_BGR
    img[(L > 0).any(0)] = OCCUPIED_BGR
    img[~region2d] = (img[~region2d] * 0.5 + 40).astype(np.uint8)
    img[lidar_occupied] = (img[lidar_occupied] * 0.3 + np.array(LIDAR_BGR) * 0.7).astype(np.uint8)
    for p in track:
        ix, iy = np.floor(p[:2] / r).astype(int) - m.origin[:2]
        if 0 <= ix < nx and 0 <= iy < ny:
            img[iy, ix] = TRACK_BGR
    img = cv2.resize(img[::-1], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)  # north (+y) up
    cv2.putText(img, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
    return img


def run(
    rec: Recording, cfg: RunnerConfig, out_dir: Path, settings: MapEvalSettings | None = None, progress: bool = True
) -> dict:
    """Fuse the recording both ways, score against its velodyne scans, write pictures and numbers to ``out_dir``."""
    s = MapEvalSettings() if settings is None else settings
    frames = rec.posed()[: s.max_frames or None]
    scans = [f for f in frames if f.velodyne is not None]
    if rec.rig.T_base_velo is None or not scans:
        raise DatasetError(f"{rec.name}: no posed frame with a velodyne scan")
    mcfg = MapConfig(
        resolution=s.resolution,
        extent_xy=s.extent_xy,
        extent_z=s.extent_z,
        recentre_margin=0.5,
        decay_per_s=0.0,
        max_range=s.max_range,
    )
    kdbts, depth_map, region_map, lidar = (WorldMap(mcfg) for _ in range(4))
    runner = FrameRunner(cfg)
    T0 = frames[0].T_world_cam(s.cam)
    positions: list[np.ndarray] = []
    t_net: list[float] = []
    t_map: list[float] = []
    t_depth: list[float] = []
    for k, f in enumerate(frames):
        T = f.T_world_cam(s.cam)
        t0 = time.perf_counter()
        out = runner.process(Frame(f.image(s.cam, colour=True), f.K(s.cam), f.stamp_ns, "camera", T))
        t1 = time.perf_counter()
        kdbts.integrate(out.density, out.unseen, out.spec, T, cfg.grid.occupied_density, f.stamp_ns)
        t2 = time.perf_counter()
        assert out.depth is not None and out.depth_lens is not None, "the pipeline renders depth for every frame"
        assert not out.depth_lens.distorted, "depth is integrated in the canonical (pinhole) camera"
        integrate_depth(depth_map, out.depth, out.depth_lens.K, T, f.stamp_ns)
        t3 = time.perf_counter()
        region_map.integrate(np.zeros(out.spec.shape, np.float32), out.unseen, out.spec, T, 1.0, f.stamp_ns)
        positions.append(T[:3, 3])
        t_net.append(t1 - t0)
        t_map.append(t2 - t1)
        t_depth.append(t3 - t2)
        if progress:
            print(
                f"frame {k + 1}/{len(frames)}: network {t1 - t0:.2f} s, map {1e3 * (t2 - t1):.1f} ms, "
                f"depth rays {1e3 * (t3 - t2):.0f} ms",
                flush=True,
            )
    for f in scans:
        assert f.velodyne is not None  # scans are the frames with one
        T_world_velo = f.T_world_base @ rec.rig.T_base_velo
        pts = read_velodyne(f.velodyne)[:: s.lidar_stride, :3].astype(np.float64)
        integrate_points(
            lidar, pts @ T_world_velo[:3, :3].T + T_world_velo[:3, 3], T_world_velo[:3, 3], f.stamp_ns, T_fixed_cam=T0
        )
    track = np.array(positions)
    metres = float(np.linalg.norm(np.diff(track, axis=0), axis=1).sum())
    ground_z = float(T0[2, 3] - s.camera_height)
    region = world_keys(region_map, region_map.log_odds != 0)
    results: dict[str, Any] = {
        "recording": rec.name,
        "frames": len(frames),
        "scans": len(scans),
        "metres": metres,
        "weights": report_path(runner.stages.model_info.get("weights", "")),
        "region_voxels": len(region),
        "resolution": s.resolution,
        "network_s_per_frame": float(np.median(t_net)),
        "map_ms_per_frame": 1e3 * float(np.median(t_map)),
        "depth_rays_ms_per_frame": 1e3 * float(np.median(t_depth)),
        "maps": {},
    }
    for name, m in (("kdbts", kdbts), ("depth_only", depth_map)):
        results["maps"][name] = scores(m, lidar, region, ground_z, s.ground_clearance, s.resolution, metres)
    # pictures: the band over the road, lidar-occupied columns in red, the region's outside dimmed
    band = (ground_z + s.band[0], ground_z + s.band[1])
    r = s.resolution
    assert lidar.origin is not None  # the scans above placed it
    lo = max(0, int(np.floor(band[0] / r)) - lidar.origin[2])
    hi = int(np.floor(band[1] / r)) - lidar.origin[2] + 1
    lidar_occ2d = np.asarray((lidar.log_odds[lo:hi] > 0).any(0))
    region2d = (region_map.log_odds != 0).any(0)
    ys, xs = np.nonzero(region2d | lidar_occ2d)
    pad = 10
    crop = (slice(max(ys.min() - pad, 0), ys.max() + pad), slice(max(xs.min() - pad, 0), xs.max() + pad))
    pictures = []
    for name, m in (("KDBTS densities", kdbts), ("expected depth only", depth_map)):
        full = top_down(m, lidar_occ2d, region2d, band, track, "", scale=1)
        full = full[::-1][crop][::-1]  # back to map rows for the crop, then north up again
        pictures.append(cv2.resize(full, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST))
        cv2.putText(pictures[-1], name, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    sep = np.full((pictures[0].shape[0], 6, 3), 255, np.uint8)
    cv2.imwrite(
        str(out_dir / f"{rec.name}_maps.png"), with_legend(np.hstack([pictures[0], sep, pictures[1]]), MAP_LEGEND)
    )
    return results
