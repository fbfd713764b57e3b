"""One training forward pass: ray patches, volume rendering, image-based colour and all losses.

:class:`Objective` is an ``nn.Module`` whose ``forward`` returns the losses, so that
DistributedDataParallel can wrap it (DDP synchronises gradients only through ``forward``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdbts_ros.core.model.network import DensityField, Views
from kdbts_ros.core.model.render import composite, sample_depths
from kdbts_ros.training.config import TrainConfig
from kdbts_ros.training.losses import (
    best_view_error,
    cross_view_pseudo_depth,
    depth_hint_loss,
    edge_aware_smoothness,
    hint_mask,
    kd_density_loss,
    photometric_loss,
    probabilistic_kd_loss,
    weight_guided_invalid,
)
from kdbts_ros.training.samples import MONO, encoder_candidates, frame_split


def patch_pixels(
    num_patches: int, patch: int, height: int, width: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer pixel rows and columns (num_patches, patch, patch) of random patches inside the image."""
    v0 = torch.randint(0, height - patch + 1, (num_patches, 1, 1), generator=generator)
    u0 = torch.randint(0, width - patch + 1, (num_patches, 1, 1), generator=generator)
    r = torch.arange(patch)
    shape = (num_patches, patch, patch)
    return (v0 + r[None, :, None]).expand(shape), (u0 + r[None, None, :]).expand(shape)


def pixel_rays(rows: torch.Tensor, cols: torch.Tensor, Kn: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Unit-z ray directions (..., 3) through pixel centres, in the convention of feature sampling
    (align_corners=False).
    """
    x = (2 * cols.to(Kn.dtype) + 1) / width - 1
    y = (2 * rows.to(Kn.dtype) + 1) / height - 1
    dx = (x - Kn[..., 0, 2]) / Kn[..., 0, 0]
    dy = (y - Kn[..., 1, 2]) / Kn[..., 1, 1]
    return torch.stack([dx, dy, torch.ones_like(dx)], -1)


def ray_points(
    T_ref: torch.Tensor, frame: torch.Tensor, patch: int, dirs: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Points (B, R*S, 3) in frame 0's camera at distances t (B, R, S) along unit rays dirs (B, R, 3) of the loss
    frames ``frame`` (B, P) posed by T_ref (B, F, 4, 4); each patch's patch x patch rays share its frame.
    """
    B, R, S = t.shape
    T = T_ref[torch.arange(B, device=T_ref.device)[:, None], frame].repeat_interleave(patch * patch, 1)
    pts_cam = dirs[:, :, None] * t[..., None]  # (B, R, S, 3)
    pts = (T[:, :, None, :3, :3] @ pts_cam[..., None]).squeeze(-1) + T[:, :, None, :3, 3]
    return pts.reshape(B, R * S, 3)


@dataclass
class Rays:
    """Ray patches of one batch: where they start and where they are sampled."""

    frame: torch.Tensor  # (B, P) loss frame of each patch
    rows: torch.Tensor  # (B, P, p, p) pixel rows
    cols: torch.Tensor  # (B, P, p, p) pixel columns
    gt: torch.Tensor  # (B*P, 3, p, p) the patches' colours
    dirs: torch.Tensor  # (B, R, 3) unit directions in the loss frame's camera, R = P*p*p
    seen: torch.Tensor  # (B*P, p, p) the patches' pixels that are no padding of the training camera
    t: torch.Tensor  # (B*R, S) sample distances along the rays
    points: torch.Tensor  # (B, R*S, 3) samples in frame 0's camera

    @property
    def num_patches(self) -> int:
        return self.frame.numel()

    @property
    def patch(self) -> int:
        return self.rows.shape[-1]


class Objective(nn.Module):
    """Training losses of BTS, MVBTS or KDBTS for a batch of samples (see :mod:`.samples`)."""

    def __init__(self, model: DensityField, cfg: TrainConfig, seed: int):
        super().__init__()
        self.model, self.cfg = model, cfg
        self.generator = torch.Generator().manual_seed(seed)
        self.render_head = "sv" if cfg.method == "bts" else "mv"
        self.frozen_teacher = cfg.method == "kdbts" and cfg.teacher == "frozen"
        for name, p in model.named_parameters():
            p.requires_grad_(self._trains(name))

    def _trains(self, name: str) -> bool:
        """Which parameters this method trains (untrained ones are frozen, so DDP sees no unused gradients)."""
        cfg = self.cfg
        if name.startswith(self.model.load_only_parameters()):
            return False
        if name.startswith("heads.singleviewhead."):
            return cfg.method in ("bts", "kdbts")
        if name.startswith("heads.multiviewhead3."):
            return cfg.method == "mvbts" or (cfg.method == "kdbts" and not self.frozen_teacher)
        return not self.frozen_teacher

    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def encoder_ids(self, num_frames: int) -> list[int]:
        """Frame 0 plus random forward frames for the multi-view head; each extra may be dropped."""
        if self.render_head == "sv":
            return [0]
        candidates = encoder_candidates(num_frames)
        k = min(self.cfg.loss.encoder_views - 1, len(candidates))
        extra = [candidates[i] for i in torch.randperm(len(candidates), generator=self.generator)[:k]]
        return [0] + [i for i in extra if self._rand() >= self.cfg.loss.view_dropout]

    def hidden_views(self, num_points: tuple[int, ...], num_views: int, device: torch.device) -> torch.Tensor | None:
        """Official per-point view dropout of the multi-view head: each extra view hidden from each point with
        probability ``point_view_dropout``; view 0 always seen. None when off or when no head learns from it."""
        p = self.cfg.loss.point_view_dropout
        if p <= 0 or num_views < 2 or not self.training or self.frozen_teacher:
            return None
        hidden = torch.rand((*num_points, num_views), generator=self.generator) < p
        hidden[..., 0] = False
        return hidden.to(device)

    def sample_rays(
        self, images: torch.Tensor, valid: torch.Tensor, Kn: torch.Tensor, T_ref: torch.Tensor, ids_loss: list[int]
    ) -> Rays:
        """Patches at random places of random loss frames, and their samples in frame 0's camera.

        Rays have unit length and ``t`` is the distance along them, as the official training
        samples (so a density's optical thickness is measured along the ray, not in z).
        """
        L = self.cfg.loss
        B, _, _, H, W = images.shape
        dev = images.device
        P, p, S = L.patches, L.patch_size, L.samples
        frame = torch.tensor(ids_loss)[torch.randint(0, len(ids_loss), (B, P), generator=self.generator)].to(dev)
        rows, cols = patch_pixels(B * P, p, H, W, self.generator)
        rows, cols = rows.reshape(B, P, p, p).to(dev), cols.reshape(B, P, p, p).to(dev)
        bi = torch.arange(B, device=dev)[:, None]
        dirs = pixel_rays(rows, cols, Kn[bi, frame][:, :, None, None], H, W)  # (B, P, p, p, 3)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        gt = images[bi[:, :, None, None], frame[:, :, None, None], :, rows, cols]  # (B, P, p, p, 3)
        seen = valid[bi[:, :, None, None], frame[:, :, None, None], rows, cols]  # (B, P, p, p)
        R = P * p * p
        t = sample_depths(B * R, S, self.cfg.model.z_near, self.cfg.model.z_far, self.generator).to(dev)
        dirs = dirs.reshape(B, R, 3)
        pts = ray_points(T_ref, frame, p, dirs, t.view(B, R, S))
        return Rays(frame, rows, cols, gt.permute(0, 1, 4, 2, 3).flatten(0, 1), dirs, seen.flatten(0, 1), t, pts)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg, L, model = self.cfg, self.cfg.loss, self.model
        images, valid, Kn, T_ref = batch["images"], batch["valid"], batch["Kn"], batch["T_ref"]
        B, Fr = images.shape[:2]
        enc = self.encoder_ids(Fr)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_teacher):
            feats = model.encode(images[:, enc].flatten(0, 1)).unflatten(0, (B, len(enc)))
        w2c = torch.linalg.inv(T_ref)
        views = Views(feats, Kn[:, enc], w2c[:, enc])
        layout = int(batch["layout"][0])
        if not bool((batch["layout"] == layout).all()):
            raise ValueError("a batch must come from one sample layout (see samples.SourceBatches)")
        ids_loss, ids_render = frame_split(layout, Fr, self.generator)
        rays = self.sample_rays(images, valid, Kn, T_ref, ids_loss)
        S, p, BP = L.samples, rays.patch, rays.num_patches

        heads = ("sv", "mv") if cfg.method == "kdbts" else (self.render_head,)
        hidden = self.hidden_views(rays.points.shape[:2], len(enc), images.device) if "mv" in heads else None
        logits, invalid = model.head_logits(rays.points, views, heads, hidden)
        padded = not bool(valid.all())
        if padded:
            # a sample seen in an encoder view's padding has no feature of what that camera saw
            invalid = invalid | self._in_padding(rays.points, valid[:, enc], Kn[:, enc], w2c[:, enc])
        weights, depth = composite(F.softplus(logits[self.render_head]).view(-1, S), rays.t)
        out: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=images.device)

        if not self.frozen_teacher:
            render = (images[:, ids_render], Kn[:, ids_render], w2c[:, ids_render])
            rgb, col_invalid = model.sample_images(rays.points, *render)
            # official: a sample's colour is unusable where it is outside the render frame or seen by no encoder view;
            # and where it falls into the render frame's padding (colours no camera saw)
            col_invalid = col_invalid | invalid.all(-1, keepdim=True)
            if padded:
                col_invalid = col_invalid | self._in_padding(rays.points, valid[:, ids_render], *render[1:])
            Vr = len(ids_render)
            colour = (weights[..., None, None] * rgb.reshape(-1, S, Vr, 3)).sum(1)  # (B*R, Vr, 3)
            bad = weight_guided_invalid(weights, col_invalid.reshape(-1, S, Vr), L.invalid_threshold)
            pred = colour.view(BP, p, p, Vr, 3).permute(0, 3, 4, 1, 2)  # (B*P, Vr, 3, p, p)
            # no loss on a patch pixel that is padding: its colour was invented
            bad = bad.view(BP, p, p, Vr).permute(0, 3, 1, 2) | ~rays.seen[:, None]
            photo, pixel_error = photometric_loss(pred, rays.gt, bad)
            usable = torch.isfinite(pixel_error)
            smooth = edge_aware_smoothness(depth.view(BP, p, p), rays.gt, usable, cfg.model.z_far)
            out["photometric"], out["smoothness"] = photo.detach(), smooth.detach()
            out["usable_rays"] = usable.float().mean()
            total = total + photo + L.smoothness * smooth
            if L.featuremetric > 0:
                fm = self._featuremetric(images, Kn, w2c, rays, weights, ids_render, bad)
                out["featuremetric"] = fm.detach()
                total = total + L.featuremetric * fm
            hint_weight = L.motion_hints if layout == MONO else L.stereo_hints
            if hint_weight > 0 and "hints" in batch:
                rendered = [depth]
                if cfg.method == "kdbts":  # the student renders its own depth: it learns from the hints directly
                    rendered.append(composite(F.softplus(logits["sv"]).view(-1, S), rays.t)[1])
                padding = valid[:, ids_render] if padded else None
                hl, used = self._depth_hints(batch["hints"], T_ref, render, padding, rays, pixel_error, rendered)
                name = "motion_hints" if layout == MONO else "stereo_hints"
                out[name], out[f"{name}_used"] = hl.detach(), used
                total = total + hint_weight * hl

        if cfg.method == "kdbts":
            kd = kd_density_loss(logits["sv"], logits["mv"], ~invalid[..., 0])
            out["kd"] = kd.detach()
            total = total + (L.kd if not self.frozen_teacher else 1.0) * kd
            if L.prob_kd > 0:
                pk = self._probabilistic_kd(rays, views, logits["sv"], weights)
                out["prob_kd"] = pk.detach()
                total = total + L.prob_kd * pk
        out["depth_mean"] = depth.detach().mean()
        out["loss"] = total
        return out

    def _depth_hints(
        self,
        hints: torch.Tensor,
        T_ref: torch.Tensor,
        render: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        render_valid: torch.Tensor | None,
        rays: Rays,
        network_error: torch.Tensor,
        rendered: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Depth Hints: log-L1 of each rendered depth (B*R,) to the hint where the hint's photometric error (same
        patches, views and error as the photometric loss) beats the network's ``network_error`` (B*P, p, p).

        hints (B, F, H, W) z-depth per sample frame, 0 where none; ``render_valid`` (B, Vr, H, W) the render
        frames' seen pixels when any has padding. Returns the loss (summed over ``rendered``) and the share of
        rays it supervised.
        """
        B, p, BP = hints.shape[0], rays.patch, rays.num_patches
        bi = torch.arange(B, device=hints.device)[:, None, None, None]
        hint_z = hints[bi, rays.frame[:, :, None, None], rays.rows, rays.cols].reshape(B, -1)  # (B, R)
        hint_t = hint_z / rays.dirs[..., 2]  # z-depth to distance along the unit ray
        with torch.no_grad():
            # the hint's colours, at the network's own depth where a pixel has no hint so every SSIM window is filled
            t = torch.where(hint_z > 0, hint_t, rendered[0].detach().view(B, -1))
            points = ray_points(T_ref, rays.frame, p, rays.dirs, t[..., None])
            rgb, invalid = self.model.sample_images(points, *render)
            if render_valid is not None:  # as for the network's colours: none from a render frame's padding
                invalid = invalid | self._in_padding(points, render_valid, *render[1:])
            Vr = rgb.shape[2]
            pred = rgb.reshape(BP, p, p, Vr, 3).permute(0, 3, 4, 1, 2)
            hint_error = best_view_error(pred, rays.gt, invalid.reshape(BP, p, p, Vr).permute(0, 3, 1, 2))
            mask = hint_mask(hint_z.view(BP, p, p), hint_error, network_error).flatten()
        loss = sum(depth_hint_loss(d, hint_t.flatten(), mask) for d in rendered)
        return torch.as_tensor(loss), mask.float().mean()

    def _in_padding(
        self, points: torch.Tensor, valid: torch.Tensor, Kn: torch.Tensor, w2c: torch.Tensor
    ) -> torch.Tensor:
        """(B, N, V) whether each point projects into (or next to) the padding of each view; valid (B, V, H, W)."""
        seen, _ = self.model.sample_images(points, valid[:, :, None].to(points.dtype), Kn, w2c)
        # bilinear: a point within a pixel of the padding blends an invented colour in
        return seen[..., 0] < 1.0 - 1e-3

    def _featuremetric(
        self,
        images: torch.Tensor,
        Kn: torch.Tensor,
        w2c: torch.Tensor,
        rays: Rays,
        weights: torch.Tensor,
        ids_render: list[int],
        bad: torch.Tensor,
    ) -> torch.Tensor:
        """KD-MVS featuremetric consistency: the ray's rendered render-view features against the loss pixel's own.

        Features come from the network itself but detached, so only the densities
        (through the ray weights) learn from this term. ``bad`` (B*P, Vr, p, p) marks
        views a ray cannot use.
        """
        B, Fr = images.shape[:2]
        S, p, Vr = weights.shape[1], rays.patch, len(ids_render)
        with torch.no_grad():
            fmaps = self.model.encode(images.flatten(0, 1)).unflatten(0, (B, Fr))
        C = fmaps.shape[2]
        vals, _ = self.model.sample_images(rays.points, fmaps[:, ids_render], Kn[:, ids_render], w2c[:, ids_render])
        rendered = (weights[..., None, None] * vals.reshape(-1, S, Vr, C)).sum(1)  # (B*R, Vr, C)
        bi = torch.arange(B, device=images.device)[:, None, None, None]
        target = fmaps[bi, rays.frame[:, :, None, None], :, rays.rows, rays.cols].reshape(-1, 1, C)
        err = (rendered - target).abs().mean(-1).view(-1, p, p, Vr).permute(0, 3, 1, 2)
        best = err.masked_fill(bad, float("inf")).amin(1)
        ok = torch.isfinite(best)
        return best[ok].mean() if ok.any() else weights.sum() * 0.0

    def _probabilistic_kd(
        self, rays: Rays, views: Views, sv_logits: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """KD-MVS probabilistic distillation along rays, validated across teacher view subsets."""
        S = weights.shape[1]
        depths = [(weights.detach() * rays.t).sum(-1)]
        # each subset keeps frame 0 and one other view: the cross-view check of KD-MVS
        with torch.no_grad():
            for k in range(1, views.features.shape[1]):
                lg, _ = self.model.head_logits(rays.points, views.subset([0, k]), ("mv",))
                depths.append(composite(F.softplus(lg["mv"]).view(-1, S), rays.t)[1])
        mu, sigma, keep = cross_view_pseudo_depth(torch.stack(depths), self.cfg.loss.prob_kd_tolerance, 0.02)
        student, _ = composite(F.softplus(sv_logits).view(-1, S), rays.t)
        return probabilistic_kd_loss(student, rays.t, mu, sigma, keep)
