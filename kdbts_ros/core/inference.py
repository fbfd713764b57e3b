"""Images to views to expected depth: the one encode -> views -> render sequence of node, figures and evaluations.

The node keeps each frame's features in its window and assembles views with :func:`views_of`
(:class:`kdbts_ros.core.field.Query`); one-off users (figures, evaluations) encode with :func:`encode_views`.
Everyone renders with :func:`ray_render` (evaluations read its ``depth`` alone), whose
options carry the conventions that differ (seeded jitter, unit-length rays of the official evaluator);
the fast path renders from the views' folded maps with :func:`folded_ray_render`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kdbts_ros.core.camera import project
from kdbts_ros.core.model import folded
from kdbts_ros.core.model.network import DensityField, Views
from kdbts_ros.core.model.render import RayRender, along_rays, render_depth, sample_depths
from kdbts_ros.core.model.render_fine import render_depth_fine


def views_of(features: torch.Tensor, Kn: torch.Tensor, w2c: torch.Tensor) -> Views:
    """Views (a batch of one) of N encoded frames: features (N, C, h, w), Kn (N, 3, 3), w2c (N, 4, 4) to view 0."""
    return Views(features[None], Kn[None], w2c[None])


def encode_views(
    model: DensityField, images01: torch.Tensor, Kn: torch.Tensor, w2c: torch.Tensor | None = None
) -> Views:
    """Encode N images (N, 3, H, W) in [0, 1] in one pass; ``w2c`` defaults to the identity (one camera)."""
    if w2c is None:
        w2c = torch.eye(4, device=images01.device)[None].repeat(len(images01), 1, 1)
    return views_of(model.encode(images01), Kn, w2c)


def ray_render(
    model: DensityField,
    views: Views,
    head: str,
    dirs: torch.Tensor,
    samples: int,
    z_near: float,
    z_far: float,
    chunk: int,
    gen: torch.Generator | None = None,
    unit_rays: bool = False,
) -> RayRender:
    """Expected depth and opacity (M,) along view 0's rays ``dirs`` (M, 3), on the reference path.

    ``gen``: seeded stratified jitter, else the same sample depths for every ray. ``unit_rays``:
    the official evaluator's convention: rays scaled to unit length, samples ``z_near``..``z_far``
    metres along the ray, the expected distance converted to camera z; otherwise ``dirs`` have
    z = 1 and the samples are camera z.
    """
    if unit_rays:
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    out = render_depth(along_rays(model.point_density(views, head)), dirs, samples, z_near, z_far, chunk, gen)
    return out._replace(depth=out.depth * dirs[:, 2]) if unit_rays else out


def folded_ray_render(
    model: DensityField,
    Kn: torch.Tensor,
    w2c: torch.Tensor,
    planes: list[torch.Tensor],
    head: str,
    dirs: torch.Tensor,
    samples: int,
    z_near: float,
    z_far: float,
    chunk: int,
    gen: torch.Generator | None = None,
    fine: bool = False,
    march: Callable[..., RayRender | None] | None = None,
    xy: torch.Tensor | None = None,
    xy_terms: dict[str, torch.Tensor] | None = None,
) -> RayRender:
    """Expected depth and opacity (M,) along view 0's unit-z rays ``dirs`` (M, 3) on the fast path: the views'
    folded maps ``planes``, normalised intrinsics ``Kn`` (V, 3, 3) and poses ``w2c`` (V, 4, 4) from view 0.

    ``gen`` as in :func:`ray_render`. ``fine``: without ``gen``, the coarse-to-fine render
    (:func:`render_fine.render_depth_fine`: about half the evaluations, the same depth within
    1 % on 99 % of pixels); otherwise ignored. ``march``: the SV head without ``gen`` or ``fine``
    renders every ray in that loop nest (``ray_march.CompiledMarch`` or ``native_march.NativeMarch``) unless
    it could not be built (it returns None). ``xy``: the rays' normalised image points when the caller has them;
    ``xy_terms``: per head, the rays' x, y code term (:func:`folded.add_xy_code`), filled here on first use and
    kept by a caller whose rays stay (a depth image's, while the camera stays).
    """
    shared_depths = gen is None
    if march is not None and head == "sv" and shared_depths and not fine:
        t = sample_depths(1, samples, z_near, z_far, device=dirs.device, dtype=dirs.dtype)[0]
        xy = project(dirs, Kn[0])[0] if xy is None else xy
        xy_term = None if xy_terms is None else xy_terms.get(head)
        if xy_term is None:
            xy_term = folded.add_xy_code(model, head, xy, xy.new_zeros(len(xy), planes[0].shape[0]))
            if xy_terms is not None:
                xy_terms[head] = xy_term
        fused = march(model, head, planes[0], xy, xy_term, t)
        if fused is not None:
            return fused

    def fn(d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return folded.ray_density(model, d, t, planes, Kn, w2c, head, shared_depths=shared_depths)

    if fine and gen is None:

        def per_row(d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            # render_depth_fine may pass different depths per row; when they are all row 0's (today's
            # refinement: one block's reference depths for all its rays) the z code is shared, as in
            # the coarse pass: same densities within 4e-6, measured about half the arithmetic
            shared = bool((t == t[:1]).all())
            return folded.ray_density(model, d, t, planes, Kn, w2c, head, shared_depths=shared)

        return render_depth_fine(per_row, dirs, samples, z_near, z_far, chunk, coarse_fn=fn)
    return render_depth(fn, dirs, samples, z_near, z_far, chunk, gen)
