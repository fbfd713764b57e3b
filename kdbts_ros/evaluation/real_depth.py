"""Depth metrics on real KITTI / KITTI-360 frames against the projected velodyne scan (Eigen-split style).

Ground truth per frame: the scan mapped into the rectified camera (``T_cam_velo``), each point
rounded to its nearest pixel, the nearest return kept where several fall on one pixel;
scored where 1e-3 < depth < 80 m inside the Garg crop (rows 40.8-99.2 %, columns 3.6-96.4 %
of the image, as Monodepth2's ``eval_depth``). The network sees the frame through its checkpoint's
canonical camera, resampled as the runtime resamples it (:func:`kdbts_ros.core.lens.resampler`),
and renders depth along the rays of the ground-truth pixels of the original image only; pixels whose
ray the canonical view does not see (outside it, or in its padding) are not scored, and counted.
Metrics are averaged over frames as the KITTI protocol does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from kdbts_ros.core import geometry
from kdbts_ros.core.inference import encode_views, ray_render
from kdbts_ros.core.lens import CanonicalCamera, Resampler, resampler
from kdbts_ros.core.model.network import DensityField, Views
from kdbts_ros.data.records import DatasetError, FrameRecord, Recording, read_velodyne
from kdbts_ros.evaluation.ground_split import off_ground, road_depth, road_plane
from kdbts_ros.evaluation.metrics import (
    DEPTH_KEYS,
    OCCUPANCY_KEYS,
    SPLIT_KEYS,
    depth_metrics,
    frame_means,
    ground_split_metrics,
)
from kdbts_ros.evaluation.priors import DepthPrior
from kdbts_ros.evaluation.real_occupancy import LidarOccupancy, LidarOccupancySettings

GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)  # top, bottom (rows), left, right (columns)


def velodyne_depth(
    points_velo: np.ndarray, T_cam_velo: np.ndarray, K: np.ndarray, width: int, height: int
) -> np.ndarray:
    """(height, width) float32 z-depth of a scan in a camera; np.inf where no return lands."""
    cam = points_velo[:, :3].astype(np.float64) @ T_cam_velo[:3, :3].T + T_cam_velo[:3, 3]
    cam = cam[cam[:, 2] > 0]
    u = np.rint(K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2]).astype(np.int64)
    v = np.rint(K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v, z = u[inside], v[inside], cam[inside, 2]
    depth = np.full((height, width), np.inf, np.float32)
    order = np.argsort(-z)  # far first: numpy keeps the last write, so the nearest return wins
    depth[v[order], u[order]] = z[order]
    return depth


def lidar_truth(
    scan: np.ndarray, T_cam_velo: np.ndarray, K: np.ndarray, rays: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """A scan as ground truth in a camera of pixel rays ``rays`` (H, W, 3): its z-depth (:func:`velodyne_depth`,
    inf where no return lands) and which of those pixels stand off the road (:mod:`.ground_split`; None when the
    scan shows no road)."""
    height, width = rays.shape[:2]
    depth = velodyne_depth(scan, T_cam_velo, K, width, height)
    plane = road_plane(scan[:, :3] @ T_cam_velo[:3, :3].T + T_cam_velo[:3, 3])
    if plane is None:
        return depth, None
    off, hit = np.zeros(depth.shape, bool), np.isfinite(depth)
    off[hit] = off_ground(depth[hit], road_depth(rays[hit], plane))
    return depth, off


def crop_mask(height: int, width: int, crop: tuple[float, float, float, float] | None = GARG_CROP) -> np.ndarray:
    """Boolean (height, width) mask of the evaluated image region (all True without a crop)."""
    mask = np.zeros((height, width), bool)
    if crop is None:
        mask[:] = True
        return mask
    top, bottom, left, right = crop
    mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = True
    return mask


@dataclass
class RealDepthSettings:
    """Which frames, how depth is rendered and scored."""

    stride: int = 1
    samples: int = 64
    min_depth: float = 1e-3
    max_depth: float = 80.0
    garg_crop: bool = True
    median_scaling: bool = False  # for scale-free (monocular) networks; stereo-trained ones are metric
    seed: int = 0
    chunk_points: int = 65536


class RealDepthEvaluator:
    """Velodyne ground truth of a recording's frames (camera ``cam``), computed once for every network and head.

    With ``occupancy`` settings the frames also get lidar occupancy ground truth (KITTI-360
    protocol, :mod:`.real_occupancy`) where their following scans allow it.
    """

    def __init__(
        self,
        rec: Recording,
        settings: RealDepthSettings | None = None,
        cam: int = 0,
        occupancy: LidarOccupancySettings | None = None,
    ):
        settings = RealDepthSettings() if settings is None else settings
        self.rec, self.settings, self.cam = rec, settings, cam
        c = rec.rig.cameras[cam]
        if rec.rig.T_base_velo is None:
            raise DatasetError(f"{rec.name} has no velodyne calibration: no depth ground truth")
        self.frames = [i for i, f in enumerate(rec.frames) if f.velodyne is not None][:: settings.stride]
        if not self.frames:
            raise DatasetError(f"{rec.name} has no velodyne scans: no depth ground truth")
        mask = crop_mask(c.height, c.width, GARG_CROP if settings.garg_crop else None)
        # unit-z rays of every evaluated pixel of the original image
        self.rays = c.lens().pixel_rays()
        self.truth = []
        # per frame: which ground-truth pixels stand off the road (None: the scan shows no road to split by)
        self.off_ground: list[np.ndarray | None] = []
        for i in self.frames:
            f = rec.frames[i]
            assert f.velodyne is not None  # self.frames are the frames with a scan
            depth, off = lidar_truth(read_velodyne(f.velodyne), f.T_cam_velo(cam), c.K, self.rays)
            valid = mask & np.isfinite(depth) & (depth > settings.min_depth) & (depth < settings.max_depth)
            rows, cols = np.nonzero(valid)
            self.truth.append((rows, cols, depth[rows, cols]))
            self.off_ground.append(None if off is None else off[rows, cols])
        self.occupancy = None if occupancy is None else LidarOccupancy(rec, self.frames, occupancy, cam)
        self._maps: dict[tuple[int, CanonicalCamera], Resampler] = {}

    def resampling(self, cam: int, camera: CanonicalCamera) -> Resampler:
        """The maps from camera ``cam``'s recorded images into ``camera`` (made once per camera)."""
        key = (cam, camera)
        if key not in self._maps:
            self._maps[key] = resampler(self.rec.rig.cameras[cam].source(), camera.lens())
        return self._maps[key]

    def seen(self, camera: CanonicalCamera, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Which pixels of the evaluated camera ``camera`` sees: their ray lands inside its view, not in its
        padding."""
        uv, inside = camera.lens().project(self.rays[rows, cols])
        valid = self.resampling(self.cam, camera).valid
        u = np.clip(np.rint(uv[:, 0]), 0, camera.width - 1).astype(np.int64)
        v = np.clip(np.rint(uv[:, 1]), 0, camera.height - 1).astype(np.int64)
        return inside & valid[v, u]

    def view_frames(self, index: int, head: str) -> list[tuple[FrameRecord, int]]:
        """(frame, camera) the head reads: the frame for 'sv'; every camera at t and t+1 for 'mv' (needs poses)."""
        i = self.frames[index]
        if head == "sv":
            return [(self.rec.frames[i], self.cam)]
        if not self.readable(index, head):
            raise DatasetError(f"the multi-view head needs posed frames {self.rec.frames[i].index} and the next one")
        pair = self.rec.frames[i : i + 2]
        cams = [self.cam] + [c for c in range(len(self.rec.rig.cameras)) if c != self.cam]
        return [(f, c) for f in pair for c in cams]

    def readable(self, index: int, head: str) -> bool:
        """Whether the head can read evaluated frame ``index``: always for 'sv'; for 'mv' it and the next frame need
        poses.
        """
        i = self.frames[index]
        pair = self.rec.frames[i : i + 2]
        return head == "sv" or (len(pair) == 2 and all(f.T_world_base is not None for f in pair))

    def views(
        self, model: DensityField, index: int, head: str, camera: CanonicalCamera, device: torch.device
    ) -> tuple[Views, torch.Tensor]:
        """Encoded views of the head (each frame seen through ``camera``) relative to the evaluated camera, and the
        normalised K."""
        entries = self.view_frames(index, head)
        images, w2c = [], []
        T_ref = entries[0][0].T_world_cam(entries[0][1]) if head == "mv" else np.eye(4)
        for f, c in entries:
            images.append(self.resampling(c, camera)(f.recorded_image(c, colour=True)))
            w2c.append(geometry.invert(f.T_world_cam(c)) @ T_ref if head == "mv" else np.eye(4))
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0).to(device)
        Kn = torch.as_tensor(camera.Kn, dtype=torch.float32, device=device)
        views = encode_views(
            model,
            x,
            Kn.expand(len(entries), 3, 3),
            torch.as_tensor(np.stack(w2c), dtype=torch.float32, device=device),
        )
        return views, Kn

    @torch.inference_mode()
    def run(
        self,
        model: DensityField,
        head: str,
        camera: CanonicalCamera,
        device: torch.device | str = "cpu",
        progress: bool = True,
    ) -> dict[str, float]:
        """Mean of the per-frame depth (and, where there is ground truth, occupancy) metrics of one network head
        that sees every frame through ``camera`` (its checkpoint's canonical camera).

        Depth is rendered as the official evaluator renders it: unit-length rays sampled from
        z_near to z_far metres along the ray, the expected distance converted to camera z.
        """
        s, device = self.settings, torch.device(device)
        model = model.to(device).eval()
        gen = torch.Generator(device=device)

        @functools.lru_cache(maxsize=1)  # one encoding per frame serves its depth and its occupancy
        def views(k: int) -> tuple[Views, torch.Tensor]:
            return self.views(model, k, head, camera, device)

        def depth(k: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            v, _ = views(k)
            dirs = torch.as_tensor(self.rays[rows, cols], dtype=torch.float32, device=device)
            gen.manual_seed(s.seed)
            z = ray_render(
                model,
                v,
                head,
                dirs,
                s.samples,
                model.arch.z_near,
                model.arch.z_far,
                s.chunk_points,
                gen,
                unit_rays=True,
            ).depth
            return z.cpu().numpy().astype(np.float64)

        def occupancy(k: int) -> dict[str, float]:
            assert self.occupancy is not None  # _score asks only with occupancy ground truth
            return self.occupancy.score(model, views(k)[0], head, self.frames[k], s.chunk_points)

        return self._score(
            depth,
            occupancy,
            lambda k: self.readable(k, head),
            head.upper(),
            progress,
            lambda r, c: self.seen(camera, r, c),
        )

    def run_prior(self, prior: DepthPrior) -> dict[str, float]:
        """The same metrics of an image-free depth prior (:mod:`.priors`)."""
        K = self.rec.rig.cameras[self.cam].K

        # the same query points in every frame: the prior's answer is computed once
        occupied = prior.occupied(self.occupancy.points_cam) if self.occupancy is not None else None

        def occupancy(k: int) -> dict[str, float]:
            assert self.occupancy is not None and occupied is not None  # _score asks only with occupancy ground truth
            return self.occupancy.score_prediction(occupied, self.frames[k])

        return self._score(
            lambda k, rows, cols: prior.depth(rows, cols, K), occupancy, lambda k: True, prior.name, False
        )

    def _score(
        self,
        depth: Callable[[int, np.ndarray, np.ndarray], np.ndarray],
        occupancy: Callable[[int], dict[str, float]],
        readable: Callable[[int], bool],
        label: str,
        progress: bool,
        seen: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> dict[str, float]:
        """Per-frame metrics of a predictor, averaged over the frames it can read, on the ground-truth pixels it
        ``seen`` (default: all); how many it does not see is counted."""
        s = self.settings
        records, occupied, split = [], [], []
        pixels = unseen = 0
        for k in tqdm(range(len(self.frames)), disable=not progress, desc=label, leave=False):
            rows, cols, gt = self.truth[k]
            off = self.off_ground[k]
            has_occupancy = self.occupancy is not None and self.frames[k] in self.occupancy.truth
            # the MV head skips frames without a posed successor; its "frames" count says how many it scored
            if (len(gt) == 0 and not has_occupancy) or not readable(k):
                continue
            if has_occupancy:
                occupied.append(occupancy(k))
            if seen is not None:
                keep = seen(rows, cols)
                pixels, unseen = pixels + len(gt), unseen + int((~keep).sum())
                rows, cols, gt = rows[keep], cols[keep], gt[keep]
                off = None if off is None else off[keep]
            if len(gt) == 0:
                continue
            pred = depth(k, rows, cols)
            if s.median_scaling:
                pred = pred * np.median(gt) / np.median(pred)
            records.append(depth_metrics(gt, pred, s.min_depth, s.max_depth))
            if off is not None:
                split.append(ground_split_metrics(gt, pred, off, s.min_depth, s.max_depth))
        if not records:
            raise DatasetError(
                f"{self.rec.name}: no frame that {label} can read has velodyne ground truth in the evaluated region"
            )
        out = {k: float(np.mean([r[k] for r in records])) for k in DEPTH_KEYS} | {"frames": len(records)}
        if split:
            out |= frame_means(split, SPLIT_KEYS) | {"split_frames": len(split)}
        if seen is not None:
            # ground-truth pixels whose ray the network's canonical view does not see are not scored
            out |= {"gt_pixels": pixels, "unseen_gt_pixels": unseen}
        if occupied:
            out |= frame_means(occupied, OCCUPANCY_KEYS)
            out["occupancy_frames"] = len(occupied)
        return out
