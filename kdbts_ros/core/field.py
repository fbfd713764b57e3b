"""The query stages: the density field at grid cells (densities and an explicit unseen mask) and depth along rays.

The arithmetic is a strategy chosen once at start-up, and again when ``model.fast`` changes
(:func:`choose_field`): the reference path (:class:`ReferenceField`, the model's own query in
``model.chunk_points`` chunks) or the fast path (:class:`FoldedField`: the views' folded maps of
:mod:`kdbts_ros.core.model.folded`, only the cells the camera sees, chunks sized to the working
memory ``model.query_memory_mb``). With ``model.backend onnxruntime`` the field is queried with
torch's fast path too: onnxruntime's query graph measured 3x slower on the CPU (kdbts bench,
docs/performance/export.md); the graph is for deployment (TensorRT).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from kdbts_ros.core import geometry
from kdbts_ros.core.camera import project, ray_grid, ray_pixel_intrinsics
from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.frames import EncodedFrame
from kdbts_ros.core.inference import folded_ray_render, ray_render, views_of
from kdbts_ros.core.model import folded
from kdbts_ros.core.model.native_march import NativeMarch
from kdbts_ros.core.model.network import DensityField, Views
from kdbts_ros.core.model.ray_march import CompiledMarch
from kdbts_ros.core.model.render import RayRender


class Query:
    """What a frame is queried with: the head, the encoded frames it reads (the query frame first), each one's
    normalised intrinsics ``Kn`` (V, 3, 3) and pose ``w2c`` (V, 4, 4) from the query frame, and the query frame's
    valid pixels (None: its camera sees them all).

    :attr:`views`, the frames' features stacked for the model's own query (the reference path), is formed on
    first use: the fast path reads the folded maps instead, and stacking a window of full-size feature maps
    into fresh memory took 100-350 ms a frame at MV(4) (640x192, this CPU).
    """

    def __init__(
        self,
        head: str,
        entries: Sequence[EncodedFrame],
        Kn: torch.Tensor,
        w2c: torch.Tensor,
        valid: torch.Tensor | None = None,
        views: Views | None = None,
    ):
        self.head, self.entries, self.Kn, self.w2c = head, list(entries), Kn, w2c
        self.valid = entries[0].valid if entries else valid
        self._views = views

    @classmethod
    def of(cls, head: str, entries: Sequence[EncodedFrame], device: torch.device) -> Query:
        """The views of ``entries`` relative to the first (its own view is exactly the identity)."""
        current = entries[0]
        w2c = [np.eye(4)]  # the ray path relies on view 0 being the identity
        for e in entries[1:]:
            assert e.T_fixed_cam is not None and current.T_fixed_cam is not None  # other views are posed
            w2c.append(geometry.invert(e.T_fixed_cam) @ current.T_fixed_cam)
        Kn = torch.stack([e.Kn for e in entries])
        return cls(head, entries, Kn, torch.as_tensor(np.stack(w2c), dtype=torch.float32, device=device))

    @classmethod
    def of_views(cls, head: str, views: Views, valid: torch.Tensor | None = None) -> Query:
        """A query of already encoded views (a batch of one) rather than of window entries."""
        return cls(head, [], views.Kn[0], views.w2c[0], valid, views)

    @property
    def num_views(self) -> int:
        return len(self.Kn)

    @property
    def views(self) -> Views:
        """The frames' features, intrinsics and poses as the model's own query takes them (stacked on first use)."""
        if self._views is None:
            self._views = views_of(torch.stack([e.features for e in self.entries]), self.Kn, self.w2c)
        return self._views


def unseen_pixels(xy: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Whether normalised image points (..., 2) fall on pixels their camera does not see (padding), (...) bool.

    ``valid`` (H, W) is the canonical image's mask; pixel i spans normalised [2i/W - 1, 2(i+1)/W - 1]
    (features are sampled with align_corners=False). Points outside [-1, 1] are left to the caller.
    """
    if valid is None:
        return torch.zeros(xy.shape[:-1], dtype=torch.bool, device=xy.device)
    H, W = valid.shape
    col = ((xy[..., 0] + 1) * (W / 2)).floor().long().clamp(0, W - 1)
    row = ((xy[..., 1] + 1) * (H / 2)).floor().long().clamp(0, H - 1)
    return ~valid[row, col]


class GridDensity(NamedTuple):
    """Densities (N,) float32 of grid cell centres, finite everywhere (0 where unseen), and the unseen mask (N,)."""

    density: np.ndarray
    unseen: np.ndarray


class DepthImage(NamedTuple):
    """A depth render (h, w) float32 of the canonical camera and the pixel intrinsics K (3, 3) of its size.

    ``depth``: camera z in metres, NaN where the ray is not terminated within range (its opacity is
    below ``render.min_opacity``) or falls in the padding the camera does not see; elsewhere the
    official expected depth. ``confidence``: the ray's opacity (1 - the transmittance that reaches
    the far end of its samples) in [0, 1], 0 in the padding.
    """

    depth: np.ndarray
    confidence: np.ndarray
    K: np.ndarray


def query_memory_mb(cfg: PipelineConfig, device: torch.device) -> int:
    """Working memory of one fast-path query chunk: configured, else 64 MiB on CPU (cache), 4 GiB on CUDA."""
    return cfg.model.query_memory_mb or (4096 if device.type == "cuda" else 64)


def smaller_query_memory(cfg: PipelineConfig, device: torch.device) -> list[tuple[str, int]]:
    """Parameter changes that halve the query chunks, proposed after the device ran out of memory.

    Only proposed: whoever runs the stages applies them as parameter changes, so that the
    configuration and the node's parameters keep showing the values in use.
    """
    return [
        ("model.query_memory_mb", max(16, query_memory_mb(cfg, device) // 2)),
        ("model.chunk_points", max(1024, cfg.model.chunk_points // 2)),
    ]


class DepthRays(NamedTuple):
    """A depth image's rays where its camera sees (its padding has no depth), kept while the camera stays."""

    dirs: torch.Tensor  # (M, 3) camera-frame directions with unit z
    xy: torch.Tensor  # (M, 2) their normalised image points
    pixels: np.ndarray  # (M,) their pixels, flat
    xy_terms: dict[str, torch.Tensor]  # per head, the x, y code term of folded_ray_render, filled on first use


class _Field:
    """What both strategies share: the model, the live configuration and the depth image's pixel rays."""

    def __init__(self, cfg: PipelineConfig, model: DensityField, device: torch.device, input_size: tuple[int, int]):
        self.cfg, self.model, self.device, self.input_size = cfg, model, device, input_size
        self._rays: tuple[torch.Tensor, int, int, torch.Tensor | None, DepthRays] | None = None

    def depth_rays(self, Kn: torch.Tensor, h: int, w: int, valid: torch.Tensor | None) -> DepthRays:
        """The seen rays of an h x w depth image (:func:`ray_grid`), kept while the intrinsics, the size and the
        camera's valid pixels (kept per lens by the encoding) stay: about 10 ms a frame at 640 x 192 on this CPU,
        and the code term of the rays with them."""
        if self._rays is not None:
            kn, kept_h, kept_w, kept_valid, rays = self._rays
            if (kept_h, kept_w) == (h, w) and kept_valid is valid and torch.equal(kn, Kn):
                return rays
        dirs = ray_grid(Kn, h, w).reshape(-1, 3)
        xy = project(dirs, Kn)[0]
        seen = torch.nonzero(~unseen_pixels(xy, valid))[:, 0]
        rays = DepthRays(dirs[seen], xy[seen], seen.cpu().numpy(), {})
        self._rays = (Kn, h, w, valid, rays)
        return rays

    def depth(self, query: Query, Kn: torch.Tensor, scale: float | None = None) -> DepthImage:
        """The depth image at ``scale`` (default ``render.depth_scale``) of the network size, its confidence and K."""
        cfg, (H, W) = self.cfg, self.input_size
        scale = cfg.render.depth_scale if scale is None else scale
        h = max(1, round(H * scale))
        w = max(1, round(W * scale))
        gen = torch.Generator(device=self.device).manual_seed(cfg.model.seed) if cfg.render.jitter == "seeded" else None
        rays = self.depth_rays(Kn, h, w, query.valid)
        depth = np.full(h * w, np.nan, np.float32)  # rays into the padding: no depth invented
        confidence = np.zeros(h * w, np.float32)
        if len(rays.pixels):
            render = self._ray_render(query, rays, gen)
            depth[rays.pixels] = render.depth.float().cpu().numpy()
            confidence[rays.pixels] = render.opacity.float().cpu().numpy()
        depth[confidence < cfg.render.min_opacity] = np.nan  # not terminated within range (sky)
        return DepthImage(depth.reshape(h, w), confidence.reshape(h, w), ray_pixel_intrinsics(Kn.cpu().numpy(), w, h))

    def _ray_render(self, query: Query, rays: DepthRays, gen: torch.Generator | None) -> RayRender:
        raise NotImplementedError


class ReferenceField(_Field):
    """The reference path: the model's point queries, every cell and every ray sample on its own."""

    def grid(self, centres: np.ndarray, query: Query) -> GridDensity:
        """Densities and unseen mask (flat) of grid cell centres (..., 3) in the query frame's camera."""
        pts = torch.as_tensor(centres.reshape(1, -1, 3).astype(np.float32), device=self.device)
        sigma, invalid = self.model.query(pts, query.views, query.head, self.cfg.model.chunk_points)
        # a voxel is seen when the current camera sees it (the SV head reads view 0 only), not in its padding
        padded = unseen_pixels(project(pts[0], query.Kn[0])[0], query.valid)
        unseen = (invalid[0, :, 0] | padded).cpu().numpy()
        return GridDensity(np.where(unseen, 0.0, sigma[0].float().cpu().numpy()).astype(np.float32), unseen)

    def _ray_render(self, query: Query, rays: DepthRays, gen: torch.Generator | None) -> RayRender:
        m, r = self.cfg.model, self.cfg.render
        return ray_render(
            self.model, query.views, query.head, rays.dirs, r.samples, m.z_near, m.z_far, m.chunk_points, gen
        )


# Cell centres that moved less than this (m) are the same cells: a planner grid placed through a moving odom
# frame and back comes with rounding noise of about 1e-6 m every frame (measured in kdbts soak)
SAME_CELL_M = 1e-4


def _same_cells(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.abs(a - b).max(initial=0.0) <= SAME_CELL_M)


class _Visible(NamedTuple):
    """A grid's cells the camera sees (:meth:`FoldedField._visible`) and what they were found with."""

    Kn: torch.Tensor
    valid: torch.Tensor | None
    centres: np.ndarray
    visible: torch.Tensor  # (M,) flat indices of the seen cells, in pixel order
    points: torch.Tensor  # (M, 3) their centres
    unseen: np.ndarray  # (N,) bool
    view0: dict[str, folded.View0Terms]  # per head, filled on first use


class FoldedField(_Field):
    """The fast path: each frame's folded maps (kept in its encoding), only the cells the camera sees decoded."""

    def __init__(self, cfg: PipelineConfig, model: DensityField, device: torch.device, input_size: tuple[int, int]):
        super().__init__(cfg, model, device, input_size)
        self._visible_cache: list[_Visible] = []  # per grid: the paper's and the planner's alternate
        # built at the first call, when render.fused asks: march.c on a CPU (2x inductor's loop), Triton on CUDA
        self._march = NativeMarch() if device.type == "cpu" else CompiledMarch()

    def planes(self, query: Query) -> list[torch.Tensor]:
        """The query frames' folded maps for its head (a head new to a frame is folded once and kept)."""
        return [folded.kept_fold(self.model, e.features, e.planes, query.head) for e in query.entries]

    def chunk(self, head: str, num_views: int) -> int:
        """Points per query chunk that fit the working-memory budget."""
        budget = query_memory_mb(self.cfg, self.device) * 2**20
        return max(1024, budget // folded.bytes_per_point(self.model, head, num_views))

    def _visible(self, centres: np.ndarray, Kn: torch.Tensor, valid: torch.Tensor | None) -> _Visible:
        """The grid cells (flat) the current camera sees, in the order of their pixels, and the unseen mask.

        Decoded in pixel order, neighbouring cells read neighbouring texels of the folded maps: bilinear
        sampling measured 2x faster than in the grid's order on this CPU. Kept for the last two grids (a
        frame queries the paper's and the planner's) while the intrinsics, the camera's valid pixels
        (kept per lens by the encoding) and the grid's cells stay (within :data:`SAME_CELL_M`), with what view 0
        contributes to the cells
        (:class:`folded.View0Terms`, per head): their projection and code cost more than their decoding.
        """
        for entry in self._visible_cache:
            if (
                entry.valid is valid
                and torch.equal(entry.Kn, Kn)
                and (entry.centres is centres or _same_cells(entry.centres, centres))
            ):
                return entry
        pts = torch.as_tensor(centres.reshape(-1, 3).astype(np.float32), device=self.device)
        xy, _, outside = project(pts, Kn)
        seen_mask = ~(outside | unseen_pixels(xy, valid))
        seen = torch.nonzero(seen_mask)[:, 0]
        H, W = self.input_size
        col = ((xy[seen, 0] + 1) * (W / 2)).long().clamp(0, W - 1)
        row = ((xy[seen, 1] + 1) * (H / 2)).long().clamp(0, H - 1)
        visible = seen[torch.argsort(row * W + col)]
        entry = _Visible(Kn, valid, centres, visible, pts[visible], (~seen_mask).cpu().numpy(), {})
        self._visible_cache = [entry, *self._visible_cache[:1]]
        return entry

    def grid(self, centres: np.ndarray, query: Query) -> GridDensity:
        """Densities and unseen mask (flat) of grid cell centres (..., 3); only the seen cells are decoded."""
        head, planes = query.head, self.planes(query)
        cells = self._visible(centres, query.Kn[0], query.valid)
        if head not in cells.view0:
            cells.view0[head] = folded.view0_terms(self.model, head, cells.points, query.Kn[0])
        view0, chunk = cells.view0[head], self.chunk(head, len(planes))
        sig = [
            folded.folded_density(
                self.model,
                cells.points[s : s + chunk],
                planes,
                query.Kn,
                query.w2c,
                head,
                folded.View0Terms(*(t[s : s + chunk] for t in view0)),
            )[0]
            for s in range(0, len(cells.points), chunk)
        ]
        density = np.zeros(cells.unseen.shape, np.float32)
        if sig:  # a grid the camera sees none of (a planner window behind it) has nothing to decode
            density[cells.visible.cpu().numpy()] = torch.cat(sig).float().cpu().numpy()
        return GridDensity(density, cells.unseen)

    def _ray_render(self, query: Query, rays: DepthRays, gen: torch.Generator | None) -> RayRender:
        m, r = self.cfg.model, self.cfg.render
        planes = self.planes(query)
        return folded_ray_render(
            self.model,
            query.Kn,
            query.w2c,
            planes,
            query.head,
            rays.dirs,
            r.samples,
            m.z_near,
            m.z_far,
            self.chunk(query.head, len(planes)),
            gen,
            fine=r.fine,
            march=self._march if r.fused else None,
            xy=rays.xy,
            xy_terms=rays.xy_terms,
        )


FieldQuery = ReferenceField | FoldedField


def choose_field(
    cfg: PipelineConfig, model: DensityField, device: torch.device, input_size: tuple[int, int]
) -> FieldQuery:
    """The query strategy of ``model.fast``: the fast path (folded maps) or the reference path."""
    return (FoldedField if cfg.model.fast else ReferenceField)(cfg, model, device, input_size)
