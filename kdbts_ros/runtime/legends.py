"""Colour bars that say what a picture's colours mean: depth in metres, occupancy, the density profile.

Each legend is a BGR strip as wide as the picture it goes under: the colour map along its width
(black background), tick labels below, and a grey swatch for what the picture leaves unknown.
cv2 draws the text (it has no colour-bar widget; matplotlib would be a heavy dependency for this).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

UNKNOWN_BGR = (96, 96, 96)  # pixels a picture does not know (the canonical view's padding, unknown cells)
MIN_WIDTH = 400  # narrower pictures are scaled up (nearest, whole factors) so their legend stays readable
DEPTH_TICKS_M = (3.0, 4.0, 5.0, 7.0, 10.0, 20.0, 80.0)  # about evenly spread in inverse depth over 3-80 m
FONT = cv2.FONT_HERSHEY_SIMPLEX

Legend = Callable[[int, float], np.ndarray]  # (width, text scale) -> BGR strip


def inverse_depth_level(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """Normalised inverse depth in [0, 1] (far 0, near 1): where a depth sits on the depth colour map."""
    d = np.clip(depth, near, far)
    return (1.0 / d - 1.0 / far) / (1.0 / near - 1.0 / far)


def _layout(scale: float) -> tuple[int, int, int, int, int]:
    """Line thickness, letter height, padding, bar height and the text's baseline at text ``scale``."""
    thickness = max(1, round(scale * 1.5))
    (_, th), base = cv2.getTextSize("0", FONT, scale, thickness)
    pad = max(2, th // 2)
    bar_h = max(6, round(th * 0.9))
    return thickness, th, pad, bar_h, base


def legend_height(scale: float) -> int:
    """Rows of a legend drawn at text ``scale`` (any width)."""
    _, th, pad, bar_h, base = _layout(scale)
    return 3 * pad + bar_h + th + base


def _strip(
    width: int,
    scale: float,
    levels: np.ndarray,
    ticks: Sequence[tuple[float, str]],
    unknown: str | None,
    grey: bool = False,
) -> np.ndarray:
    """A magma (or ``grey``) bar of ``levels`` (values in [0, 1] along the bar), ``ticks`` (position in [0, 1],
    label) under it, and a grey swatch labelled ``unknown`` at the right end (none when None)."""
    thickness, th, pad, bar_h, _ = _layout(scale)
    swatch = 0 if unknown is None else bar_h + 2 * pad + cv2.getTextSize(unknown, FONT, scale, thickness)[0][0] + pad
    bar_w = max(1, width - swatch - 2 * pad)
    strip = np.zeros((legend_height(scale), width, 3), np.uint8)
    level8 = (np.clip(levels, 0, 1) * 255).astype(np.uint8)[None]
    colours = cv2.cvtColor(level8, cv2.COLOR_GRAY2BGR) if grey else cv2.applyColorMap(level8, cv2.COLORMAP_MAGMA)
    strip[pad : pad + bar_h, pad : pad + bar_w] = cv2.resize(colours, (bar_w, bar_h), interpolation=cv2.INTER_LINEAR)
    white = (255, 255, 255)
    for position, label in ticks:
        x = pad + round(position * (bar_w - 1))
        cv2.line(strip, (x, pad + bar_h), (x, pad + bar_h + pad // 2 + 1), white, thickness)
        lw = cv2.getTextSize(label, FONT, scale, thickness)[0][0]
        left = int(np.clip(x - lw // 2, 0, max(0, pad + bar_w - lw)))
        cv2.putText(strip, label, (left, 2 * pad + bar_h + th), FONT, scale, white, thickness, cv2.LINE_AA)
    if unknown is not None:
        sx = 3 * pad + bar_w
        strip[pad : pad + bar_h, sx : sx + bar_h] = UNKNOWN_BGR
        cv2.putText(strip, unknown, (sx + bar_h + pad, pad + bar_h), FONT, scale, white, thickness, cv2.LINE_AA)
    return strip


def depth_legend(near: float, far: float) -> Legend:
    """Depth pictures (:func:`~kdbts_ros.runtime.pictures.depth_png`): magma on inverse depth, ticks in metres."""

    def draw(width: int, scale: float) -> np.ndarray:
        # the bar runs far (left, dark) to near (right, bright), even in inverse depth as the picture is
        levels = np.linspace(0.0, 1.0, 256)
        shown = [d for d in DEPTH_TICKS_M if near <= d <= far] or [near, far]
        ticks = [(float(inverse_depth_level(np.array(d), near, far)), f"{d:g}") for d in shown]
        ticks[0] = (ticks[0][0], ticks[0][1] + " m")  # the unit once, at the near end
        return _strip(width, scale, levels, ticks, "not seen")

    return draw


def occupancy_legend(width: int, scale: float) -> np.ndarray:
    """Occupancy pictures: 0 (free) to 100 (occupied) on magma, grey unknown."""
    return _strip(
        width, scale, np.linspace(0, 1, 256), [(0.0, "free 0"), (0.5, "50"), (1.0, "100 occupied")], "unknown"
    )


def confidence_legend(width: int, scale: float) -> np.ndarray:
    """Depth confidence pictures: each ray's opacity, black 0 (nothing stopped it, or not seen) to white 1."""
    return _strip(width, scale, np.linspace(0, 1, 256), [(0.0, "0 nothing hit"), (1.0, "1 opaque")], None, grey=True)


def profile_legend(width: int, scale: float) -> np.ndarray:
    """The bird's-eye density profile: bright where a column is free down to the road (min-max scaled)."""
    return _strip(width, scale, np.linspace(0, 1, 256), [(0.0, "occupied high up"), (1.0, "free to the road")], None)


def swatch_legend(items: Sequence[tuple[tuple[int, int, int], str]]) -> Legend:
    """Pictures of categories (a map's free, occupied, unknown, ...): a swatch of each BGR colour and its label."""

    def draw(width: int, scale: float) -> np.ndarray:
        thickness, _, pad, bar_h, _ = _layout(scale)
        strip = np.zeros((legend_height(scale), width, 3), np.uint8)
        x = pad
        for colour, label in items:
            strip[pad : pad + bar_h, x : x + bar_h] = colour
            cv2.rectangle(strip, (x, pad), (x + bar_h - 1, pad + bar_h - 1), (255, 255, 255), 1)
            cv2.putText(
                strip, label, (x + bar_h + pad, pad + bar_h), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA
            )
            x += bar_h + 3 * pad + cv2.getTextSize(label, FONT, scale, thickness)[0][0]
        return strip

    return draw


def with_legend(picture: np.ndarray, legend: Legend, min_width: int = MIN_WIDTH) -> np.ndarray:
    """``picture`` (BGR) over its legend; a picture narrower than ``min_width`` is first scaled up by a whole
    factor (nearest: every pixel stays one value)."""
    factor = max(1, -(-min_width // picture.shape[1]))
    if factor > 1:
        picture = cv2.resize(picture, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    return np.vstack([picture, legend(picture.shape[1], legend_scale(picture.shape[1]))])


def legend_scale(width: int) -> float:
    """Text scale for a legend ``width`` pixels wide: about 18 px letters on a KITTI-wide (1242 px) picture."""
    return float(np.clip(0.8 * width / 1242, 0.35, 0.8))
