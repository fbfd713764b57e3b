"""One training forward pass: ray patches, volume rendering, image-based colour and all losses.

:class:`Objective` is an ``nn.Module`` whose ``forward`` returns the losses, so that
DistributedDataParallel can wrap it (DDP synchronises gradients only through ``forward``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.model.network import DensityField, Views
from ..core.model.render import composite, sample_depths
from .config import TrainConfig
from .losses import (cross_view_pseudo_depth, edge_aware_smoothness, kd_density_loss, photometric_loss,
                     probabilistic_kd_loss, weight_guided_invalid)
from .samples import FORWARD_FRAMES, loss_render_split


def patch_pixels(num_patches: int, patch: int, height: int, width: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer pixel rows and columns (num_patches, patch, patch) of random patches inside the image."""
    v0 = torch.randint(0, height - patch + 1, (num_patches, 1, 1), generator=generator)
    u0 = torch.randint(0, width - patch + 1, (num_patches, 1, 1), generator=generator)
    r = torch.arange(patch)
    shape = (num_patches, patch, patch)
    return (v0 + r[None, :, None]).expand(shape), (u0 + r[None, None, :]).expand(shape)


def pixel_rays(rows: torch.Tensor, cols: torch.Tensor, Kn: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Unit-z ray directions (..., 3) through pixel centres, in the convention of feature sampling (align_corners=False)."""
    x = (2 * cols.to(Kn.dtype) + 1) / width - 1
    y = (2 * rows.to(Kn.dtype) + 1) / height - 1
    dx = (x - Kn[..., 0, 2]) / Kn[..., 0, 0]
    dy = (y - Kn[..., 1, 2]) / Kn[..., 1, 1]
    return torch.stack([dx, dy, torch.ones_like(dx)], -1)


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
        if name.startswith("heads.singleviewhead."):
            return cfg.method in ("bts", "kdbts")
        if name.startswith("heads.multiviewhead3."):
            return cfg.method == "mvbts" or (cfg.method == "kdbts" and not self.frozen_teacher)
        return not self.frozen_teacher

    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def encoder_ids(self) -> list[int]:
        """Frame 0 plus random forward frames for the multi-view head; each extra may be dropped."""
        if self.render_head == "sv":
            return [0]
        k = min(self.cfg.loss.encoder_views - 1, len(FORWARD_FRAMES))
        extra = [FORWARD_FRAMES[i] for i in torch.randperm(len(FORWARD_FRAMES), generator=self.generator)[:k]]
        return [0] + [i for i in extra if self._rand() >= self.cfg.loss.view_dropout]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg, L, model = self.cfg, self.cfg.loss, self.model
        images, Kn, T_ref = batch["images"], batch["Kn"], batch["T_ref"]
        B, Fr, _, H, W = images.shape
        dev = images.device
        enc = self.encoder_ids()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_teacher):
            feats = model.encode(images[:, enc].flatten(0, 1)).unflatten(0, (B, len(enc)))
        w2c = torch.linalg.inv(T_ref)
        views = Views(feats, Kn[:, enc], w2c[:, enc])

        # rays: patches at random places of random loss frames, one set per sample
        ids_loss, ids_render = loss_render_split(Fr, self._rand() < 0.5)
        P, p, S = L.patches, L.patch_size, L.samples
        frame = torch.tensor(ids_loss)[torch.randint(0, len(ids_loss), (B, P), generator=self.generator)]
        rows, cols = patch_pixels(B * P, p, H, W, self.generator)
        rows, cols = rows.reshape(B, P, p, p).to(dev), cols.reshape(B, P, p, p).to(dev)
        frame = frame.to(dev)
        bi = torch.arange(B, device=dev)[:, None]
        K_loss, T_loss = Kn[bi, frame], T_ref[bi, frame]                       # (B, P, 3, 3), (B, P, 4, 4)
        dirs = pixel_rays(rows, cols, K_loss[:, :, None, None], H, W)           # (B, P, p, p, 3)
        gt = images[bi[:, :, None, None], frame[:, :, None, None], :, rows, cols]  # (B, P, p, p, 3)
        gt = gt.permute(0, 1, 4, 2, 3).flatten(0, 1)                            # (B*P, 3, p, p)
        R = P * p * p
        t = sample_depths(B * R, S, cfg.model.z_near, cfg.model.z_far, self.generator).to(dev).view(B, R, S)
        pts_cam = dirs.reshape(B, R, 1, 3) * t[..., None]
        Tl = T_loss[:, :, None, None].expand(B, P, p, p, 4, 4).reshape(B, R, 1, 4, 4)
        pts = (Tl[..., :3, :3] @ pts_cam[..., None]).squeeze(-1) + Tl[..., :3, 3]  # (B, R, S, 3) in frame 0
        pts = pts.reshape(B, R * S, 3)

        heads = ("sv", "mv") if cfg.method == "kdbts" else (self.render_head,)
        logits, invalid = model.head_logits(pts, views, heads)
        weights, depth = composite(F.softplus(logits[self.render_head]).view(B * R, S), t.view(B * R, S))
        out: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=dev)

        if not self.frozen_teacher:
            rgb, col_invalid = model.sample_images(pts, images[:, ids_render], Kn[:, ids_render], w2c[:, ids_render])
            # official: a sample's colour is unusable where it is outside the render frame or seen by no encoder view
            col_invalid = col_invalid | invalid.all(-1, keepdim=True)
            Vr = len(ids_render)
            w = weights.view(B * R, S)
            colour = (w[..., None, None] * rgb.reshape(B * R, S, Vr, 3)).sum(1)    # (B*R, Vr, 3)
            bad = weight_guided_invalid(w, col_invalid.reshape(B * R, S, Vr), L.invalid_threshold)
            pred = colour.view(B * P, p, p, Vr, 3).permute(0, 3, 4, 1, 2)        # (B*P, Vr, 3, p, p)
            bad = bad.view(B * P, p, p, Vr).permute(0, 3, 1, 2)
            photo, usable = photometric_loss(pred, gt, bad)
            smooth = edge_aware_smoothness(depth.view(B * P, p, p), gt, usable, cfg.model.z_far)
            out["photometric"], out["smoothness"] = photo.detach(), smooth.detach()
            out["usable_rays"] = usable.float().mean()
            total = total + photo + L.smoothness * smooth
            if L.featuremetric > 0:
                fm = self._featuremetric(images, Kn, w2c, pts, w, ids_render, frame, rows, cols, bad, B, P, p, S)
                out["featuremetric"] = fm.detach()
                total = total + L.featuremetric * fm

        if cfg.method == "kdbts":
            kd = kd_density_loss(logits["sv"], logits["mv"], ~invalid[..., 0])
            out["kd"] = kd.detach()
            total = total + (L.kd if not self.frozen_teacher else 1.0) * kd
            if L.prob_kd > 0:
                pk = self._probabilistic_kd(pts, views, logits["sv"], weights, t, B, R, S)
                out["prob_kd"] = pk.detach()
                total = total + L.prob_kd * pk
        out["depth_mean"] = depth.detach().mean()
        out["loss"] = total
        return out

    def _featuremetric(self, images, Kn, w2c, pts, w, ids_render, frame, rows, cols, bad, B, P, p, S) -> torch.Tensor:
        """KD-MVS featuremetric consistency: the ray's rendered render-view features against the loss pixel's own.

        Features come from the network itself but detached, so only the densities
        (through the ray weights) learn from this term.
        """
        model = self.model
        with torch.no_grad():
            Fr = images.shape[1]
            fmaps = model.encode(images.flatten(0, 1)).unflatten(0, (B, Fr))
        C = fmaps.shape[2]
        vals, _ = model.sample_images(pts, fmaps[:, ids_render], Kn[:, ids_render], w2c[:, ids_render])
        Vr = len(ids_render)
        rendered = (w[..., None, None] * vals.reshape(B * P * p * p, S, Vr, C)).sum(1)    # (B*R, Vr, C)
        bi = torch.arange(B, device=images.device)[:, None, None, None]
        target = fmaps[bi, frame[:, :, None, None], :, rows, cols].reshape(B * P * p * p, 1, C)
        err = (rendered - target).abs().mean(-1).view(B * P, p, p, Vr).permute(0, 3, 1, 2)
        best = err.masked_fill(bad, float("inf")).amin(1)
        ok = torch.isfinite(best)
        return best[ok].mean() if ok.any() else w.sum() * 0.0

    def _probabilistic_kd(self, pts, views, sv_logits, weights, t, B, R, S) -> torch.Tensor:
        """KD-MVS probabilistic distillation along rays, validated across teacher view subsets."""
        V = views.features.shape[1]
        depths = [(weights.detach() * t.view(B * R, S)).sum(-1)]
        if V >= 3:
            # each subset keeps frame 0 and one other view: the cross-view check of KD-MVS
            with torch.no_grad():
                for k in range(1, V):
                    lg, _ = self.model.head_logits(pts, views.subset([0, k]), ("mv",))
                    wk, dk = composite(F.softplus(lg["mv"]).view(B * R, S), t.view(B * R, S))
                    depths.append(dk)
        mu, sigma, keep = cross_view_pseudo_depth(torch.stack(depths), self.cfg.loss.prob_kd_tolerance, 0.02)
        ws, _ = composite(F.softplus(sv_logits).view(B * R, S), t.view(B * R, S))
        return probabilistic_kd_loss(ws, t.view(B * R, S), mu, sigma, keep)
