"""Fast density queries: each head's first layer folded into the feature maps once per frame.

A head's first layer is linear in ``[feature, code]``, and bilinear sampling with
border padding is a convex combination of map pixels, so
``W_f sample(F) + b = sample(W_f F + b)``. Folding ``W_f`` and ``b`` into a
per-frame map (a matmul when the frame enters the window, kept channels-last)
leaves only the positional code's product per (point, view). Points are rows,
(V, N, channels): each sample is a map row per corner (:mod:`bilinear`) and the
remaining products are plain 2-D GEMMs that accumulate into it; the reference
path's (N, V, C + 39) rows need a concat that costs more than the arithmetic.

Rays add one more saving: all samples of a ray from view 0's centre project to
the same pixel of view 0, and each code entry depends on one coordinate only,
so view 0's sampled map and x, y code are computed once per ray, and only the
depth code per sample. Results equal :meth:`DensityField.density` up to
floating-point summation order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F

from kdbts_ros.core.camera import project, to_camera
from kdbts_ros.core.model import bilinear
from kdbts_ros.core.model.code import z_code
from kdbts_ros.core.model.compiled import Compiled
from kdbts_ros.core.model.heads import MLP, MultiViewHead
from kdbts_ros.core.model.network import MV_HEAD, SV_HEAD, DensityField


def first_mlp(model: DensityField, head: str) -> MLP:
    """The per-view MLP whose first layer reads [feature, code]: the SV head, or the MV head's ``mlp``."""
    return cast(MLP, model.heads[SV_HEAD]) if head == "sv" else cast(MultiViewHead, model.heads[MV_HEAD]).mlp


def code_weights(model: DensityField, head: str, coord: int) -> torch.Tensor:
    """Columns (hidden, 1 + 2 F) of the first layer that read the code entries of one coordinate (x, y, z).

    The code of (x, y, z) is [x, y, z, then sin/cos(f_k .) of x, y, z for each entry k]:
    interleaved by coordinate, so coordinate d owns every third entry from d.
    """
    lin = first_mlp(model, head).lin_in
    return lin.weight[:, model.arch.feature_dim + coord :: 3]


def code_term(model: DensityField, head: str, coord: int, values: torch.Tensor) -> torch.Tensor:
    """One code coordinate's share (hidden, n) of the first layer's pre-activation at n values (n,) of it."""
    return code_weights(model, head, coord) @ model.code_xyz(values[:, None]).T


def fold_features(model: DensityField, features: torch.Tensor, head: str) -> torch.Tensor:
    """A frame's folded map (hidden, H, W) for one head from its features (C, H, W).

    On a CPU stored channels-last (a permuted view of (H, W, hidden) rows), read a row per corner
    (:mod:`bilinear`); on CUDA channel-first, where grid_sample measured 6x slower on channels-last
    maps (H100). A matmul rather than a 1x1 convolution: cuDNN convolutions default to TF32 on
    recent GPUs, which would break fp32 agreement with the reference path.
    """
    lin = first_mlp(model, head).lin_in
    C, H, W = features.shape
    if features.is_cuda:
        return torch.addmm(lin.bias[:, None], lin.weight[:, :C], features.reshape(C, -1)).view(-1, H, W)
    rows = torch.addmm(lin.bias[None, :], features.reshape(C, -1).T, lin.weight[:, :C].T)
    return rows.view(H, W, -1).permute(2, 0, 1)


def kept_fold(model: DensityField, features: torch.Tensor, planes: dict[str, torch.Tensor], head: str) -> torch.Tensor:
    """A frame's folded map for ``head`` from its ``planes`` {head: map}, folded and kept there the first time."""
    if head not in planes:
        planes[head] = fold_features(model, features, head)
    return planes[head]


def bytes_per_point(model: DensityField, head: str, num_views: int) -> int:
    """Working memory of one query point (fp32 upper bound), to size chunks to a budget."""
    mlp = first_mlp(model, head)
    # projection and code (3 + 3 + 39 + 36 sin/cos arguments) plus hidden (sampled and activated) and output rows
    return 4 * num_views * (81 + 2 * mlp.lin_in.out_features + mlp.lin_out.out_features) + 64


def _sample(plane: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (N, hidden), a fresh tensor, of one view's plane (hidden, H, W) at xy (N, 2), as the
    features are sampled.

    A channels-last plane on a CPU is sampled by the compiled :func:`bilinear.bilinear_rows` (unless
    it could not be built); otherwise by grid_sample. In the plane's dtype: CPU autocast runs
    grid_sample in fp32 whatever its inputs.
    """
    rows = plane.permute(1, 2, 0)
    if not plane.is_cuda and rows.is_contiguous():
        sampled = bilinear.ROWS(rows, xy)
        if sampled is not None:
            return sampled
    return (
        F.grid_sample(
            plane[None], xy[None, None].to(plane.dtype), mode="bilinear", padding_mode="border", align_corners=False
        )[0, :, 0]
        .T.contiguous()
        .to(plane.dtype)
    )


def _head_out(mlp: MLP, pre: torch.Tensor, out: torch.Tensor) -> None:
    """One view's MLP outputs (N, d_out) into ``out`` from its pre-activations (N, hidden), which are consumed.

    One 2-D GEMM per view: a batched GEMM over the weight broadcast to every
    view ran as thousands of GEMV kernels on CUDA in half precision.
    """
    torch.addmm(mlp.lin_out.bias.to(pre.dtype), torch.relu_(pre), mlp.lin_out.weight.to(pre.dtype).T, out=out)


def _decoded(
    rows: torch.Tensor, xy: torch.Tensor, code: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor
) -> torch.Tensor:
    """One output per point (N,) of a head with one: ``w_out . relu(sample + code) + b_out``, the sample of the
    channels-last map ``rows`` (H, W, hidden) at xy (N, 2) and the code term (N, hidden)."""
    return (torch.relu(bilinear.bilinear_rows(rows, xy).float() + code.float()) * w_out.float()).sum(1) + b_out.float()


# sampling, code, relu and output in one loop nest: torch's operators write and read the (N, hidden)
# pre-activations three times (measured 45 -> 13 ms at 141,000 points on this CPU)
DECODED = Compiled(_decoded)


def _view0_out(mlp: MLP, plane: torch.Tensor, view0: View0Terms, out: torch.Tensor) -> None:
    """View 0's head outputs (N, d_out) into ``out`` from its kept terms: one loop nest for the SV head's single
    output on a CPU's channels-last map, else sampled then decoded by torch's operators."""
    rows = plane.permute(1, 2, 0)
    if mlp.lin_out.out_features == 1 and not plane.is_cuda and rows.is_contiguous():
        logits = DECODED(rows, view0.xy, view0.code, mlp.lin_out.weight[0], mlp.lin_out.bias)
        if logits is not None:
            out[:, 0] = logits
            return
    pre = _sample(plane, view0.xy)
    _head_out(mlp, pre.add_(view0.code.to(pre.dtype)), out)


class View0Terms(NamedTuple):
    """What view 0 (the query camera, w2c = I) contributes to points that stay (a grid's cells): their normalised
    image points xy (N, 2), invalid mask (N,) and the code's share of a head's first layer (N, hidden)."""

    xy: torch.Tensor
    invalid: torch.Tensor
    code: torch.Tensor


def _code_inputs(
    model: DensityField, points: torch.Tensor, Kn: torch.Tensor, w2c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per view (V): points' (N, 3) normalised image points (V, N, 2), invalid mask (V, N) and code (V, N, 39)."""
    cam = to_camera(w2c, points[None])  # (V, N, 3)
    xy, z, invalid = project(cam, Kn)
    coords = torch.cat([xy, z_code(z, model.arch.z_near, model.arch.z_far)], -1)
    return xy, invalid, model.code_xyz(coords.reshape(-1, 3)).view(len(w2c), points.shape[0], model.code_xyz.d_out)


def _all_code_weights(model: DensityField, head: str, dtype: torch.dtype) -> torch.Tensor:
    """Columns (hidden, 39) of a head's first layer that read the code."""
    return first_mlp(model, head).lin_in.weight[:, model.arch.feature_dim :].to(dtype)


def view0_terms(model: DensityField, head: str, points: torch.Tensor, Kn0: torch.Tensor) -> View0Terms:
    """:class:`View0Terms` of points (N, 3) in view 0's camera with its normalised K' (3, 3), in float32."""
    xy, invalid, code = _code_inputs(model, points, Kn0[None], torch.eye(4, device=points.device)[None])
    return View0Terms(xy[0], invalid[0], code[0] @ _all_code_weights(model, head, code.dtype).T)


def view_outputs(
    model: DensityField,
    points: torch.Tensor,
    planes: Sequence[torch.Tensor],
    Kn: torch.Tensor,
    w2c: torch.Tensor,
    head: str,
    out: torch.Tensor | None = None,
    view0: View0Terms | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-view head outputs (V, N, d_out), into ``out`` if given, and invalid mask (V, N) of points (N, 3).

    planes are the V views' :func:`fold_features` maps (hidden, H, W) for
    ``head``, kept per frame and never stacked (a copy per frame on a CPU);
    Kn (V, 3, 3) and w2c (V, 4, 4) as in :class:`Views` without the batch dimension.
    ``view0``: view 0's terms of these points, kept by a caller whose points stay (then only the
    other views are projected and coded). Points in rows: the samples come channels-last from the
    maps, and the code's product accumulates into them (measured 2-3x faster than channel-first
    outputs on a CPU).
    """
    mlp = first_mlp(model, head)
    V, N = len(planes), points.shape[0]
    dtype = planes[0].dtype  # the planes carry the compute dtype (folded under autocast)
    if out is None:
        out = torch.empty(V, N, mlp.lin_out.out_features, dtype=dtype, device=points.device)
    first = 0 if view0 is None else 1  # the first view projected and coded here
    if view0 is not None:
        _view0_out(mlp, planes[0], view0, out[0])
        if V == 1:
            return out, view0.invalid[None]
    xy, invalid, code = _code_inputs(model, points, Kn[first:], w2c[first:])
    w_code, code = _all_code_weights(model, head, dtype), code.to(dtype)
    if points.is_cuda:  # a zero 40th entry: fp16/bf16 tensor-core GEMMs need inner sizes that are multiples of 8
        w_code, code = F.pad(w_code, (0, 1)), F.pad(code, (0, 1))
    if view0 is not None:
        invalid = torch.cat([view0.invalid[None], invalid])
    for v in range(first, V):
        pre = _sample(planes[v], xy[v - first])
        # out= rather than addmm_: the same in-place product, and torch's flop counter (kdbts bench) sees it
        _head_out(mlp, torch.addmm(pre, code[v - first], w_code.T, out=pre), out[v])
    return out, invalid


def fuse(model: DensityField, out: torch.Tensor, invalid: torch.Tensor, head: str) -> torch.Tensor:
    """Density logits (N,) from per-view outputs (V, N, d_out): view 0 for 'sv', the MV head's fusion for 'mv'."""
    if head == "sv":
        return out[0, :, 0]
    # heads.MultiViewHead with the views first
    conf = out[:, :, 0].masked_fill(invalid, torch.finfo(out.dtype).min)
    fused = (torch.softmax(conf, 0)[:, :, None] * out[:, :, 1:]).sum(0)  # (N, F)
    mlp2 = cast(MultiViewHead, model.heads[MV_HEAD]).mlp2
    h = torch.relu(torch.addmm(mlp2.lin_in.bias, fused, mlp2.lin_in.weight.T))
    return torch.addmm(mlp2.lin_out.bias, h, mlp2.lin_out.weight.T)[:, 0]


def folded_density(
    model: DensityField,
    points: torch.Tensor,
    planes: Sequence[torch.Tensor],
    Kn: torch.Tensor,
    w2c: torch.Tensor,
    head: str,
    view0: View0Terms | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softplus density (N,) and invalid mask (N, V) of points (N, 3), as ``model.density`` (``view0``: as in
    :func:`view_outputs`)."""
    if head == "sv":
        planes, Kn, w2c = planes[:1], Kn[:1], w2c[:1]
    out, invalid = view_outputs(model, points, planes, Kn, w2c, head, view0=view0)
    return F.softplus(fuse(model, out, invalid, head)), invalid.transpose(0, 1)


def add_xy_code(model: DensityField, head: str, xy: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` (R, hidden) plus the x, y code's share of a head's first-layer pre-activation at image points xy (R, 2).

    The code's products accumulate into ``out``: no temporaries.
    """
    for coord in (0, 1):
        code = model.code_xyz(xy[:, coord : coord + 1]).to(out.dtype)
        torch.addmm(out, code, code_weights(model, head, coord).T.to(out.dtype), out=out)
    return out


def sample_term(model: DensityField, head: str, t: torch.Tensor) -> torch.Tensor:
    """The z code's share (hidden, S) of a head's first-layer pre-activation at depths t (S,)."""
    return code_term(model, head, 2, z_code(t, model.arch.z_near, model.arch.z_far))


def output_layer(model: DensityField, head: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The SV head's output weights (hidden,) and bias (1,): one density logit per sample."""
    lin_out = first_mlp(model, head).lin_out
    return lin_out.weight[0].to(dtype), lin_out.bias.to(dtype)


def ray_terms(
    model: DensityField,
    head: str,
    plane: torch.Tensor,
    xy: torch.Tensor,
    zs: torch.Tensor,
    xy_term: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A head's first-layer pre-activations along rays from view 0's centre, split by what they depend on.

    Per ray (R, hidden): view 0's folded ``plane`` sampled at the rays' normalised image points xy
    (R, 2), plus their x, y code (``xy_term``: :func:`add_xy_code` of zeros, kept by a caller whose
    rays stay). Per sample (hidden, n, S): the z code at depths ``zs`` (n, S), n = 1 when every ray
    has the same depths. A sample's pre-activation is the sum of its two.
    """
    per_ray = _sample(plane, xy)
    if xy_term is None:
        add_xy_code(model, head, xy, per_ray)
    else:
        per_ray += xy_term.to(per_ray.dtype)
    return per_ray, sample_term(model, head, zs.reshape(-1)).view(-1, *zs.shape)


def ray_density(
    model: DensityField,
    dirs: torch.Tensor,
    t: torch.Tensor,
    planes: Sequence[torch.Tensor],
    Kn: torch.Tensor,
    w2c: torch.Tensor,
    head: str,
    shared_depths: bool,
) -> torch.Tensor:
    """Softplus density (R, S) at depths t (R, S) along unit-z rays dirs (R, 3) from view 0's centre (w2c[0] = I).

    View 0's sampled map and x, y code are shared by a ray's samples; with
    ``shared_depths`` (every ray has the depths of row 0: no jitter) so is the z code.
    """
    mlp = first_mlp(model, head)
    R, S = t.shape
    zs = t[:1] if shared_depths else t
    per_ray, per_sample = ray_terms(model, head, planes[0], project(dirs, Kn[0])[0], zs)
    pre = (per_ray[:, None, :] + per_sample.permute(1, 2, 0)).reshape(R * S, -1)  # (R * S, hidden)
    V = len(planes) if head == "mv" else 1
    out = pre.new_empty(V, R * S, mlp.lin_out.out_features)
    _head_out(mlp, pre, out[0])
    if head == "sv":
        return F.softplus(out[0, :, 0]).view(R, S)
    points = (dirs[:, None, :] * t[..., None]).reshape(-1, 3)
    invalid = torch.empty(V, R * S, dtype=torch.bool, device=dirs.device)
    # validity per point as the reference computes it: rounding can put a border ray's samples outside view 0
    invalid[0] = project(points, Kn[0])[2]
    if V > 1:
        invalid[1:] = view_outputs(model, points, planes[1:], Kn[1:], w2c[1:], head, out[1:])[1]
    return F.softplus(fuse(model, out, invalid, head)).view(R, S)
