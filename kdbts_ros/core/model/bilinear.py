"""Bilinear sampling of a channels-last map, as ``grid_sample`` (bilinear, border, align_corners=False) does.

On a CPU ``grid_sample`` gathers one channel at a time across points (AVX2 gathers): measured 2-8x
slower than reading each corner's channels as one contiguous row, which needs the map channels-last.
The coordinates are formed as its CPU kernel forms them, with one rounding (a fused multiply-add,
emulated in float64): then samples equal its own to summation order (5e-7 measured), not only to
the 1e-4 that fp32 coordinate rounding allows on a map that changes fast between pixels.
"""

from __future__ import annotations

import torch

from kdbts_ros.core.model.compiled import Compiled


def _unnormalise(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinate of a normalised one, clipped to the border (align_corners=False)."""
    return ((coord.double() + 1) * (size / 2) - 0.5).float().clamp(0, size - 1)


def _corners(xy: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, ...]:
    """Rows iy, iy1 and columns ix, ix1 (N,) of the four texels around normalised points xy (N, 2) of an H x W map,
    and the weights (N, 1) north, south, west, east."""
    x, y = _unnormalise(xy[:, 0], W), _unnormalise(xy[:, 1], H)
    x0, y0 = x.floor(), y.floor()
    east, south = (x - x0)[:, None], (y - y0)[:, None]
    west, north = 1 - east, 1 - south
    ix, iy = x0.long(), y0.long()
    ix1, iy1 = (ix + 1).clamp(max=W - 1), (iy + 1).clamp(max=H - 1)
    return iy, iy1, ix, ix1, north, south, west, east


def bilinear_rows(rows: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Samples (N, C) of a channels-last map ``rows`` (H, W, C) at normalised points xy (N, 2), in its dtype.

    Weights and sums in fp32 whatever the map's dtype, as CPU autocast runs ``grid_sample``.
    """
    iy, iy1, ix, ix1, north, south, west, east = _corners(xy, rows.shape[0], rows.shape[1])
    out = rows[iy, ix].float() * (north * west) + rows[iy, ix1].float() * (north * east)
    out = out + rows[iy1, ix].float() * (south * west) + rows[iy1, ix1].float() * (south * east)
    return out.to(rows.dtype)


def taps(xy: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`bilinear_rows` as flat texel indices (N, 4) into an (H W, C) map and weights (N, 4), in its order of
    summation: for a caller that samples the same points of many maps (``march.c``)."""
    iy, iy1, ix, ix1, north, south, west, east = _corners(xy, H, W)
    index = torch.stack([iy * W + ix, iy * W + ix1, iy1 * W + ix, iy1 * W + ix1], 1)
    return index, torch.cat([north * west, north * east, south * west, south * east], 1)


ROWS = Compiled(bilinear_rows)
