"""``kdbts eval``: occupancy and depth metrics of trained networks on held-out posed sequences.

Each checkpoint is evaluated with every head it has, side by side: the single-view
head reads frame 0 only; the multi-view head reads the forward stereo pair at t and
t+1 (the frames it was trained on). Ground truth comes from the dataset: exact depth
renders and, for synthetic folders, the scene's exact occupancy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from kdbts_ros.core.camera import project
from kdbts_ros.core.grids import ProfileSpec, density_profile
from kdbts_ros.core.inference import encode_views, ray_render
from kdbts_ros.core.model.network import DensityField, Views
from kdbts_ros.data.synth_folder import SynthFolder
from kdbts_ros.evaluation.metrics import DEPTH_KEYS, OCCUPANCY_KEYS, depth_metrics, frame_means, occupancy_metrics
from kdbts_ros.evaluation.protocol import OccupancyProtocol, visible_from_depth
from kdbts_ros.runtime.legends import legend_scale, profile_legend
from kdbts_ros.runtime.pictures import profile_picture, query_profile
from kdbts_ros.training.objective import pixel_rays
from kdbts_ros.training.samples import TrainingFrames

MV_FRAMES = [0, 1, 2, 3]  # [left t, left t+1, right t, right t+1] of a sample
TABLE_KEYS = ("o_acc", "ie_acc", "ie_rec") + DEPTH_KEYS
TABLE_NAMES = {
    "o_acc": "O_acc ↑",
    "ie_acc": "IE_acc ↑",
    "ie_rec": "IE_rec ↑",
    "abs_rel": "Abs Rel ↓",
    "sq_rel": "Sq Rel ↓",
    "rmse": "RMSE ↓",
    "rmse_log": "RMSE log ↓",
    "a1": "δ<1.25 ↑",
    "a2": "δ<1.25² ↑",
    "a3": "δ<1.25³ ↑",
    "off_abs_rel": "Abs Rel off road ↓",
    "off_a1": "δ<1.25 off road ↑",
    "road_abs_rel": "Abs Rel road ↓",
    "road_a1": "δ<1.25 road ↑",
    "off_share": "off road",
}


@dataclass
class EvalSettings:
    """How the evaluation samples frames and renders depth."""

    stride: int = 8  # every stride-th frame of each sequence
    samples: int = 64  # samples per ray for depth (official: 64)
    pixel_step: int = 2  # depth is scored at every pixel_step-th row and column (CPU time)
    max_depth: float = 80.0  # depth cap (KITTI protocol)
    occupied_density: float = 0.5
    seed: int = 0  # stratified ray jitter, seeded as the official evaluator
    chunk_points: int = 65536
    protocol: OccupancyProtocol = OccupancyProtocol()


class Evaluator:
    """Ground truth of the held-out frames, computed once and reused for every network and head."""

    def __init__(self, root: Path, settings: EvalSettings | None = None):
        settings = EvalSettings() if settings is None else settings
        self.folder = SynthFolder(root)
        self.settings = settings
        self.frames = TrainingFrames(self.folder, 0, max_cameras=2, stride=settings.stride)
        self.K = self.folder.K
        pts = settings.protocol.points_cam().reshape(-1, 3)
        self.points = pts
        self.truth = []
        scenes = {seq: self.folder.scene(seq) for seq in {seq for seq, _ in self.frames.items}}  # one per street
        for seq, t in self.frames.items:
            T = self.folder.cam_to_world(seq, 0, t)
            depth = self.folder.depth(seq, 0, t)
            occupied = scenes[seq].occupied(pts @ T[:3, :3].T + T[:3, 3])
            self.truth.append((depth, occupied, visible_from_depth(pts, depth, self.K)))

    def views(self, model: DensityField, sample: dict[str, torch.Tensor], head: str, device: torch.device) -> Views:
        """Encoded frames a head reads: frame 0 for 'sv', the stereo pair at t and t+1 for 'mv'."""
        ids = [0] if head == "sv" else MV_FRAMES
        return encode_views(
            model,
            sample["images"][ids].to(device),
            sample["Kn"][ids].to(device),
            torch.linalg.inv(sample["T_ref"][ids]).to(device),
        )

    @torch.inference_mode()
    def run(
        self, model: DensityField, head: str, device: torch.device | str = "cpu", progress: bool = True
    ) -> dict[str, float]:
        """Mean of the per-frame metrics of one network head (NaN-safe, as frames may lack a class)."""
        s, device = self.settings, torch.device(device)
        model = model.to(device).eval()
        H, W = self.folder.height, self.folder.width
        rows, cols = torch.meshgrid(torch.arange(0, H, s.pixel_step), torch.arange(0, W, s.pixel_step), indexing="ij")
        gen = torch.Generator(device=device)
        records = []
        pts = torch.as_tensor(self.points, dtype=torch.float32, device=device)[None]
        for i in tqdm(range(len(self.frames)), disable=not progress, desc=head, leave=False):
            sample = self.frames[i]
            views = self.views(model, sample, head, device)
            sigma, _ = model.query(pts, views, head, s.chunk_points)
            depth_gt, occupied, visible = self.truth[i]
            rec = occupancy_metrics(sigma[0].cpu().numpy() > s.occupied_density, occupied, visible)
            dirs = pixel_rays(rows, cols, sample["Kn"][0], H, W).reshape(-1, 3).to(device)
            gen.manual_seed(s.seed)
            pred = ray_render(
                model, views, head, dirs, s.samples, model.arch.z_near, model.arch.z_far, s.chunk_points, gen
            ).depth
            rec.update(
                depth_metrics(depth_gt[rows, cols], pred.cpu().numpy().reshape(rows.shape), max_depth=s.max_depth)
            )
            records.append(rec)
        return frame_means(records, OCCUPANCY_KEYS + DEPTH_KEYS) | {"frames": len(records)}

    @torch.inference_mode()
    def profile(self, model: DensityField, head: str, index: int = 0, device: torch.device | str = "cpu") -> np.ndarray:
        """Bird's-eye density profile (paper Fig. 4 volume) of one held-out frame."""
        device = torch.device(device)
        model = model.to(device).eval()
        views = self.views(model, self.frames[index], head, device)
        return query_profile(model, views, head, self.settings.chunk_points)

    def true_profile(self, index: int = 0, density: float = 10.0) -> np.ndarray:
        """The same profile from the scene's exact occupancy (occupied points get ``density``)."""
        seq, t = self.frames.items[index]
        spec = ProfileSpec()
        T = self.folder.cam_to_world(seq, 0, t)
        pts = spec.points_cam().reshape(-1, 3)
        occ = self.folder.scene(seq).occupied(pts @ T[:3, :3].T + T[:3, 3])
        shape = (spec.res_y, spec.res_xz, spec.res_xz)
        # unseen as the networks' profiles count it: the camera's own projection validity
        outside = project(torch.as_tensor(pts), torch.as_tensor(self.frames.Kn, dtype=torch.float64))[2].numpy()
        return density_profile(np.where(occ, density, 0.0).reshape(shape), outside.reshape(shape))

    def input_image(self, index: int = 0) -> np.ndarray:
        """RGB of a held-out frame's camera 0."""
        seq, t = self.frames.items[index]
        return self.folder.image(seq, 0, t)


def markdown_table(results: dict[str, dict[str, float]], keys: tuple[str, ...] = TABLE_KEYS) -> str:
    """Rows per network and head, the papers' metrics (``keys``) as columns."""
    head = "| model | " + " | ".join(TABLE_NAMES[k] for k in keys) + " |"
    lines = [head, "|---" * (len(keys) + 1) + "|"]
    for label, r in results.items():
        lines.append(f"| {label} | " + " | ".join(f"{r.get(k, float('nan')):.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def profile_strip(evaluator: Evaluator, pictures: dict[str, np.ndarray], index: int = 0) -> np.ndarray:
    """One BGR figure: the input frame above the labelled profiles (ground truth first)."""
    tiles = []
    for label, prof in {"ground truth": evaluator.true_profile(index), **pictures}.items():
        tile = cv2.resize(profile_picture(prof), (256, 256), interpolation=cv2.INTER_NEAREST)
        cv2.putText(tile, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    row = np.hstack(tiles)
    rgb = evaluator.input_image(index)
    top = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    top = cv2.resize(top, (row.shape[1], round(row.shape[1] * rgb.shape[0] / rgb.shape[1])))
    return np.vstack([top, row, profile_legend(row.shape[1], legend_scale(row.shape[1]))])


def write_report(
    out_dir: Path, results: dict[str, dict[str, float]], meta: dict, keys: tuple[str, ...] = TABLE_KEYS
) -> tuple[Path, Path]:
    """results.md (table of ``keys``) and results.json (all metrics and how they were made)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "results.md", out_dir / "results.json"
    md.write_text(markdown_table(results, keys))
    js.write_text(json.dumps({"results": results, **meta}, indent=2))
    return md, js
