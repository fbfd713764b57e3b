"""Pictures a person can read: depth, occupancy, the paper's density profile, and the figure.

The figure puts one image, its depth and its bird's-eye density profile (paper Figs. 4-5)
side by side, each panel captioned; ``kdbts viz``, ``kdbts demo`` and ``kdbts replay --png``
all draw it with :func:`figure`. BGR arrays throughout, ready for ``cv2.imwrite``.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch

from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.field import Query, ReferenceField
from kdbts_ros.core.frames import Outputs
from kdbts_ros.core.grids import ProfileSpec, density_profile
from kdbts_ros.core.inference import encode_views
from kdbts_ros.core.lens import Lens
from kdbts_ros.core.model.network import DensityField, Views
from kdbts_ros.core.stages import Stages
from kdbts_ros.runtime.legends import (
    UNKNOWN_BGR,
    confidence_legend,
    depth_legend,
    occupancy_legend,
    profile_legend,
    with_legend,
)

INPUT_CAPTION = "network's view (grey: not seen)"
DEPTH_CAPTION = "depth (magma: near bright)"


def occupancy_png(occupancy: np.ndarray, cell_px: int = 4) -> np.ndarray:
    """BGR picture of an OccupancyGrid: far at the top, magma for 0-100, grey for unknown."""
    # scale in a wide integer type: uint8 * 255 would wrap around
    levels = (np.clip(occupancy.astype(np.int32), 0, 100) * 255 // 100).astype(np.uint8)
    img = cv2.applyColorMap(levels, cv2.COLORMAP_MAGMA)
    img[occupancy < 0] = UNKNOWN_BGR
    img = img[::-1]  # row 0 is the nearest row of the grid
    return cv2.resize(img, None, fx=cell_px, fy=cell_px, interpolation=cv2.INTER_NEAREST)


def published_bird_view(out: Outputs) -> np.ndarray:
    """The occupancy the frame publishes, row 0 nearest (:func:`occupancy_png`'s input): the planner's grid when
    there is one, else the camera slab's."""
    assert out.occupancy is not None, "a frame without a grid has no bird's-eye view"
    return out.planner.bird_rows() if out.planner is not None else out.occupancy


def depth_png(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """BGR picture of a depth map: magma on normalised inverse depth, as the paper's figures; grey where NaN."""
    unknown = ~np.isfinite(depth)
    inv = (1.0 / np.clip(np.where(unknown, far, depth), near, far) - 1.0 / far) / (1.0 / near - 1.0 / far)
    picture = cv2.applyColorMap((inv * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)
    picture[unknown] = UNKNOWN_BGR
    return picture


def labelled_occupancy_png(occupancy: np.ndarray) -> np.ndarray:
    """:func:`occupancy_png` over its colour bar (free, occupied, unknown)."""
    return with_legend(occupancy_png(occupancy), occupancy_legend)


def labelled_depth_png(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """:func:`depth_png` over its colour bar in metres (scaled up by a whole factor when small)."""
    return with_legend(depth_png(depth, near, far), depth_legend(near, far))


def confidence_png(confidence: np.ndarray) -> np.ndarray:
    """BGR picture of a depth image's confidence: black at 0 (no light stopped within range, or not seen) to
    white at 1."""
    grey = np.rint(np.clip(confidence, 0.0, 1.0) * 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def labelled_confidence_png(confidence: np.ndarray) -> np.ndarray:
    """:func:`confidence_png` over its grey bar (0 to 1)."""
    return with_legend(confidence_png(confidence), confidence_legend)


def profile_picture(profile: np.ndarray) -> np.ndarray:
    """BGR magma picture of a density profile, min-max normalised as the official figures."""
    norm = (profile - profile.min()) / max(float(np.ptp(profile)), 1e-6)
    return cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)


def profile_caption(spec: ProfileSpec = ProfileSpec()) -> str:
    """The profile panel's caption: the volume it covers (ASCII: cv2's fonts have no +-)."""
    return f"density profile, x +-{max(abs(v) for v in spec.x_range):g} m, z {spec.z_range[0]:g}-{spec.z_range[1]:g} m"


def query_profile(
    model: DensityField, views: Views, head: str, chunk_points: int, spec: ProfileSpec = ProfileSpec()
) -> np.ndarray:
    """The Fig. 4 density profile (z, x) of a head, on the grid of view 0's camera."""
    device = views.features.device
    pts = torch.as_tensor(spec.points_cam().reshape(1, -1, 3), dtype=torch.float32, device=device)
    sigma, invalid = model.query(pts, views, head, chunk_points)
    shape = (spec.res_y, spec.res_xz, spec.res_xz)
    return density_profile(sigma[0].float().cpu().numpy().reshape(shape), invalid[0, :, 0].cpu().numpy().reshape(shape))


class Figure(NamedTuple):
    """A figure and what it shows."""

    depth: np.ndarray  # (H, W) metres at the network input size
    profile: np.ndarray  # (res_xz, res_xz) in [0, 1], far at the top
    picture: np.ndarray  # BGR: input over depth, the profile to their right


def figure_head(cfg: PipelineConfig) -> str:
    """The head a one-image figure shows: the multi-view head only when the mode asks for it."""
    return "mv" if cfg.mode == "mv" else "sv"


def figure(stages: Stages, rgb: np.ndarray, lens: Lens, head: str | None = None, pitch_deg: float = 0.0) -> Figure:
    """Encode one RGB image seen through ``lens`` and draw its figure: the network's view, its depth, the profile.

    The input and depth panels show the canonical camera's view (what the network sees), scaled
    to the image's width. The depth is rendered at the network's full input size, whatever ``render.depth_scale``
    the node publishes at; the profile is queried on the paper's grid, tilted by
    ``pitch_deg`` (KITTI-360: 5). Costs an encode, a depth render and a 4 M-point query.
    """
    cfg, model = stages.cfg, stages.model
    head = head or figure_head(cfg)
    spec = ProfileSpec(pitch_deg=pitch_deg)
    with stages.precision():
        seen, image01, Kn, valid = stages.encoding.prepare(rgb, lens)
        views = encode_views(model, image01, Kn[None])
        # the reference path, whatever model.fast: one image, its own encoding
        reference = ReferenceField(cfg, model, stages.device, stages.input_size)
        depth = reference.depth(Query.of_views(head, views, valid), Kn, scale=1.0).depth
        profile = query_profile(model, views, head, cfg.model.chunk_points, spec)
    size = (rgb.shape[1], round(rgb.shape[1] * seen.shape[0] / seen.shape[1]))
    view = seen.copy()
    if valid is not None:  # the padding the camera does not see, grey as in the depth panel (grey: RGB = BGR)
        view[~valid.cpu().numpy()] = UNKNOWN_BGR
    picture = compose_figure(
        cv2.resize(view, size, interpolation=cv2.INTER_NEAREST),
        depth_png(cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST), cfg.model.z_near, cfg.model.z_far),
        profile_picture(profile),
        (cfg.model.z_near, cfg.model.z_far),
        profile_caption(spec),
    )
    return Figure(depth, profile, picture)


def compose_figure(
    rgb: np.ndarray,
    depth_bgr: np.ndarray,
    profile_bgr: np.ndarray,
    depth_range: tuple[float, float],
    profile_label: str = profile_caption(),
) -> np.ndarray:
    """Input (the network's view, scaled to the image's width) over the depth picture (same size) and its colour
    bar (``depth_range``: near and far metres), the profile as a square of their height right over its own bar.

    Each panel gets its caption in its top-left corner, sized to the input's height.
    """
    h, w = rgb.shape[:2]
    if depth_bgr.shape[:2] != (h, w):
        raise ValueError(f"depth picture {depth_bgr.shape[1]}x{depth_bgr.shape[0]} is not the input's {w}x{h}")
    scale = caption_scale(h)
    left = np.vstack(
        [
            _captioned(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), INPUT_CAPTION, scale),
            _captioned(depth_bgr.copy(), DEPTH_CAPTION, scale),
            depth_legend(*depth_range)(w, scale),
        ]
    )
    # nearest: the profile is a grid of cells, interpolation would invent values between them
    square = cv2.resize(profile_bgr, (2 * h, 2 * h), interpolation=cv2.INTER_NEAREST)
    right = np.vstack([_captioned(square, profile_label, scale), profile_legend(2 * h, scale)])
    return np.hstack([left, right])


def caption_scale(height: int) -> float:
    """Text scale of a figure's captions and colour bars for panels ``height`` rows tall."""
    return max(0.35, 0.8 * height / 375)  # KITTI's 375 rows: 0.8, about 18 px tall letters


def _captioned(img: np.ndarray, text: str, scale: float) -> np.ndarray:
    """White text on a black box in the top-left corner (readable on any picture); draws into img."""
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(2 * scale))
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    pad = max(2, th // 3)
    cv2.rectangle(img, (0, 0), (tw + 2 * pad, th + base + 2 * pad), (0, 0, 0), cv2.FILLED)
    cv2.putText(img, text, (pad, pad + th), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return img
