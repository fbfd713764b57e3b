"""Training losses: photometric L1+SSIM on patches, edge-aware smoothness, and distillation.

Shapes: patches are (..., C, p, p) tensors; ray quantities are flattened to (R, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# 3x3 Gaussian window of the official SSIM (sigma 1.5, normalised)
_G = torch.tensor([0.0947, 0.1183, 0.0947, 0.1183, 0.1478, 0.1183, 0.0947, 0.1183, 0.0947]).view(1, 1, 3, 3)
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2
KD_DENSITY_CLIP = 2.0  # official pseudo-ground-truth densities are compared clipped to [0, 2]


def ssim_error(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 clamped to [0, 1], per pixel and channel, for images (N, C, h, w).

    Local statistics use the 3x3 Gaussian window with zero padding (official).
    """
    C = x.shape[1]
    w = _G.to(x).expand(C, 1, 3, 3)
    mu_x, mu_y = F.conv2d(x, w, padding=1, groups=C), F.conv2d(y, w, padding=1, groups=C)
    sxx = F.conv2d(x * x, w, padding=1, groups=C) - mu_x**2
    syy = F.conv2d(y * y, w, padding=1, groups=C) - mu_y**2
    sxy = F.conv2d(x * y, w, padding=1, groups=C) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + SSIM_C1) * (2 * sxy + SSIM_C2)) / ((mu_x**2 + mu_y**2 + SSIM_C1) * (sxx + syy + SSIM_C2))
    return ((1 - ssim) / 2).clamp(0, 1)


def patch_photometric_error(pred: torch.Tensor, gt: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """Per-pixel error alpha * SSIM + (1 - alpha) * L1, channel mean: (N, C, p, p) -> (N, p, p)."""
    return alpha * ssim_error(pred, gt).mean(1) + (1 - alpha) * (pred - gt).abs().mean(1)


def photometric_loss(
    pred: torch.Tensor, gt: torch.Tensor, view_invalid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-over-render-views reconstruction loss on patches.

    pred (P, V, 3, p, p) rendered patches per render view, gt (P, 3, p, p),
    view_invalid (P, V, p, p) rays whose colour in that view is unusable (weight-guided
    policy). A pixel's error is the minimum over its usable views; pixels with no usable
    view are ignored. Returns the mean loss and the per-pixel error (P, p, p), inf where unusable.
    """
    best = best_view_error(pred, gt, view_invalid)
    usable = torch.isfinite(best)
    loss = best[usable].mean() if usable.any() else pred.sum() * 0.0
    return loss, best


def best_view_error(pred: torch.Tensor, gt: torch.Tensor, view_invalid: torch.Tensor) -> torch.Tensor:
    """Per-pixel photometric error (P, p, p), the minimum over usable render views; inf where none is usable.

    Shapes as :func:`photometric_loss`.
    """
    P, V = pred.shape[:2]
    err = patch_photometric_error(pred.flatten(0, 1), gt[:, None].expand_as(pred).flatten(0, 1))
    return err.view(P, V, *err.shape[-2:]).masked_fill(view_invalid, float("inf")).amin(1)


def hint_mask(hint: torch.Tensor, hint_error: torch.Tensor, network_error: torch.Tensor) -> torch.Tensor:
    """The Depth Hints rule: a pixel learns from its hint where there is one (> 0) and the hint's
    reprojection error is lower than that of the network's own depth.
    """
    return (hint > 0) & torch.isfinite(hint_error) & (hint_error < network_error.detach())


def depth_hint_loss(depth: torch.Tensor, hint: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-L1 |log d - log d_hint| of rendered depths against their hints over masked pixels (mean; 0 if none)."""
    m = mask.to(depth.dtype)
    err = (torch.log(depth.clamp_min(1e-3)) - torch.log(hint.clamp_min(1e-3))).abs()
    return (err * m).sum() / m.sum().clamp_min(1)


def weight_guided_invalid(weights: torch.Tensor, invalid: torch.Tensor, threshold: float = 0.9) -> torch.Tensor:
    """Per ray and view: more than ``threshold`` of the ray's weight lies on samples invalid in that view.

    weights (R, S), invalid (R, S, V) -> (R, V).
    """
    return (weights.detach()[..., None] * invalid.to(weights.dtype)).sum(1) > threshold


def edge_aware_smoothness(
    depth: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, max_depth: float = 80.0
) -> torch.Tensor:
    """Edge-aware smoothness of mean-normalised inverse depth on patches.

    depth (P, p, p) rendered depth, image (P, 3, p, p) ground-truth colours, mask (P, p, p)
    usable pixels. |grad d| is weighted by exp(-mean_c |grad I|).
    """
    disp = 1.0 / depth.clamp(1e-3, max_depth)
    disp = disp / disp.mean((1, 2), keepdim=True).clamp_min(1e-7)
    gx = (disp[:, :, 1:] - disp[:, :, :-1]).abs() * torch.exp(-(image[..., 1:] - image[..., :-1]).abs().mean(1))
    gy = (disp[:, 1:] - disp[:, :-1]).abs() * torch.exp(-(image[..., 1:, :] - image[..., :-1, :]).abs().mean(1))
    mx = (mask[:, :, 1:] & mask[:, :, :-1]).to(disp.dtype)
    my = (mask[:, 1:] & mask[:, :-1]).to(disp.dtype)
    return (gx * mx).sum() / mx.sum().clamp_min(1) + (gy * my).sum() / my.sum().clamp_min(1)


def kd_density_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KDBTS distillation: L1 between softplus densities clipped to [0, 2] over masked points.

    The teacher is detached here, so this loss never trains the teacher (stop-gradient).
    """
    s = F.softplus(student_logits).clamp(0, KD_DENSITY_CLIP)
    t = F.softplus(teacher_logits.detach()).clamp(0, KD_DENSITY_CLIP)
    m = mask.to(s.dtype)
    return ((s - t).abs() * m).sum() / m.sum().clamp_min(1)


def ray_depth_moments(weights: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (R,) of the ray-termination depth distribution (weights (R, S) at depths t)."""
    mu = (weights * t).sum(-1)
    var = (weights * (t - mu[:, None]) ** 2).sum(-1)
    return mu, var.clamp_min(1e-12).sqrt()


def gaussian_kl(mu_t: torch.Tensor, sigma_t: torch.Tensor, mu_s: torch.Tensor, sigma_s: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_t, sigma_t^2) || N(mu_s, sigma_s^2)), elementwise."""
    return torch.log(sigma_s / sigma_t) + (sigma_t**2 + (mu_t - mu_s) ** 2) / (2 * sigma_s**2) - 0.5


def cross_view_pseudo_depth(
    depths: torch.Tensor, rel_tol: float, min_sigma_rel: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KD-MVS style pseudo label from teacher depths of the same rays rendered with different view sets.

    depths (K, R). A ray is kept when every estimate agrees with their mean within
    ``rel_tol`` (cross-view check); the label is the mean mu and the spread sigma
    (floored at ``min_sigma_rel`` * mu so agreeing views do not demand a delta).
    Returns (mu, sigma, keep), all (R,) and detached.
    """
    d = depths.detach()
    mu = d.mean(0)
    keep = ((d - mu).abs() <= rel_tol * mu).all(0)
    sigma = torch.maximum(d.std(0, unbiased=False), min_sigma_rel * mu)
    return mu, sigma, keep


def probabilistic_kd_loss(
    student_weights: torch.Tensor,
    t: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    keep: torch.Tensor,
    log_depth: bool = True,
) -> torch.Tensor:
    """KL from the teacher's pseudo depth distribution to the student's ray-termination distribution.

    Both are treated as Gaussians; with ``log_depth`` the comparison is in log depth
    (relative errors, so far rays do not dominate). Mean over kept rays.
    """
    if log_depth:
        t_s = torch.log(t)
        sigma = sigma / mu
        mu = torch.log(mu)
    else:
        t_s = t
    mu_s, sigma_s = ray_depth_moments(student_weights, t_s)
    sigma_s = torch.maximum(sigma_s, torch.full_like(sigma_s, 1e-3))
    kl = gaussian_kl(mu, sigma, mu_s, sigma_s)
    k = keep.to(kl.dtype)
    return (kl * k).sum() / k.sum().clamp_min(1)
