"""Volume rendering along camera rays: inverse-depth sampling, compositing, expected depth and opacity."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


def sample_depths(
    n_rays: int,
    n_samples: int,
    near: float,
    far: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(n_rays, n_samples) depths spaced linearly in inverse depth between near and far.

    With a generator each sample is jittered within its stratum, as the
    official renderer does (also at evaluation); without one the strata's
    mid-points are used, which is deterministic.
    """
    step = 1.0 / n_samples
    t = torch.linspace(0, 1 - step, n_samples, device=device, dtype=dtype).expand(n_rays, n_samples)
    if generator is None:
        t = t + 0.5 * step
    else:
        # drawn on the generator's device so a seeded CUDA run repeats the official rand_like draws
        noise = torch.rand(n_rays, n_samples, generator=generator, device=generator.device, dtype=torch.float32)
        t = t + noise.to(device, dtype) * step
    return 1.0 / (1.0 / near * (1 - t) + 1.0 / far * t)


def composite(sigma: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray weights (R, S) and expected termination depth (R,) from densities at depths t.

    The last interval is infinite and its alpha is forced to 1, so the weights
    sum to one (official ``hard_alpha_cap``).
    """
    delta = torch.cat([t[:, 1:] - t[:, :-1], torch.full_like(t[:, :1], 1e10)], -1)
    alpha = 1 - torch.exp(-delta.abs() * torch.relu(sigma))
    alpha = torch.cat([alpha[:, :-1], torch.ones_like(alpha[:, -1:])], -1)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], -1), -1)[:, :-1]
    weights = alpha * trans
    return weights, (weights * t).sum(-1)


def opacity(weights: torch.Tensor) -> torch.Tensor:
    """Share of each ray's light (R,) stopped before its last sample, from :func:`composite`'s weights (R, S).

    The capped last sample takes whatever light is left (official ``hard_alpha_cap``), so its
    weight is the transmittance that reaches it: what the density did not stop between the first
    and the last sample (about ``z_near`` to ``z_far``). Clamped to [0, 1] (the renderer's 1e-10
    per sample lets the transmittance exceed 1 by S * 1e-10 in empty space).
    """
    return (1 - weights[:, -1]).clamp(0.0, 1.0)


class RayRender(NamedTuple):
    """What a depth render gives per ray: the expected depth (R,) and the opacity (R,) of :func:`opacity`.

    The depth is the official one: the weights' mean depth with the light no density stopped at
    the last sample, near the far plane.
    """

    depth: torch.Tensor
    opacity: torch.Tensor

    @classmethod
    def of(cls, sigma: torch.Tensor, t: torch.Tensor) -> RayRender:
        """Composite densities (R, S) at depths t (R, S)."""
        weights, depth = composite(sigma, t)
        return cls(depth, opacity(weights))

    @classmethod
    def cat(cls, parts: list[RayRender]) -> RayRender:
        """The renders of consecutive chunks of rays as one."""
        return cls(torch.cat([p.depth for p in parts]), torch.cat([p.opacity for p in parts]))


RayDensity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def along_rays(point_density: Callable[[torch.Tensor], torch.Tensor]) -> RayDensity:
    """A ray density function (dirs (R, 3), t (R, S)) -> (R, S) from a point one (P, 3) -> (P,)."""

    def density(dirs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return point_density((dirs[:, None, :] * t[..., None]).reshape(-1, 3)).view_as(t)

    return density


def render_depth(
    density_fn: RayDensity,
    dirs: torch.Tensor,
    n_samples: int,
    near: float,
    far: float,
    chunk_points: int,
    generator: torch.Generator | None = None,
) -> RayRender:
    """Expected ray-termination depth and opacity (R,) along rays from the origin with directions (R, 3).

    ``density_fn`` maps ray directions (R', 3) and sample depths (R', S) to
    densities (R', S) at the points ``dirs * t`` (see :func:`along_rays`).
    With unit-z directions (as the official image scripts use) depth is camera z.
    """
    R = dirs.shape[0]
    rays_per_chunk = max(1, chunk_points // n_samples)
    out = []
    for start in range(0, R, rays_per_chunk):
        d = dirs[start : start + rays_per_chunk]
        t = sample_depths(d.shape[0], n_samples, near, far, generator, d.device, d.dtype)
        out.append(RayRender.of(density_fn(d, t), t))
    return RayRender.cat(out)
