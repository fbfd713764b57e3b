"""Which head a frame is queried with, and the views and folded maps it reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from kdbts_ros.core import geometry
from kdbts_ros.core.camera import project
from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.grids import GridSpec
from kdbts_ros.core.inference import views_of
from kdbts_ros.core.model import folded
from kdbts_ros.core.model.network import DensityField, Views
from kdbts_ros.core.window import FrameWindow, WindowEntry


class Heads:
    """The head choice of the configured mode over the window's posed frames (``cfg`` is read live)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        model: DensityField,
        window: FrameWindow,
        device: torch.device,
        grid_spec: Callable[[], GridSpec],
    ):
        """``grid_spec`` gives the next frame's grid (``auto`` keeps only the frames that see it)."""
        self.cfg, self.model, self.window, self.device = cfg, model, window, device
        self._grid_spec = grid_spec

    def mode_problem(self, mode: str) -> str | None:
        """Why the loaded weights cannot serve a head mode, or None."""
        if mode == "mv" and "mv" not in self.model.available_heads:
            return (
                f"mode 'mv' needs a multi-view head, but the weights have only {self.model.available_heads}; "
                "use mode 'sv' or 'auto'"
            )
        return None

    def for_mode(self) -> list[str]:
        """Heads the current mode may query, so a new frame's folded maps are made when it is encoded."""
        mode = self.cfg.mode
        return [h for h in ("sv", "mv") if h in self.model.available_heads and mode in (h, "auto")]

    def choose(self, current: WindowEntry, group: Sequence[WindowEntry] = ()) -> tuple[str, list[WindowEntry], Views]:
        """The head to query, the entries it reads (current first, then its rig frame, then the window), views.

        ``auto`` takes the multi-view head when another posed frame sees the grid.
        """
        mode, others = self.cfg.mode, []
        if current.T_fixed_cam is not None:
            seen = {id(current)}
            for e in [*group, *self.window.posed()]:
                if e.T_fixed_cam is not None and id(e) not in seen:
                    seen.add(id(e))
                    others.append(e)
        if mode == "auto" and others:
            centres = self._grid_spec().centres_cam().reshape(-1, 3)  # once, not per view
            others = [e for e in others if self._sees_grid(e, current, centres)]
        use_mv = "mv" in self.model.available_heads and (mode == "mv" or (mode == "auto" and bool(others)))
        entries = [current] + (others if use_mv else [])
        # view 0 is the query frame itself: exactly the identity (the ray path relies on it)
        w2c = [np.eye(4)]
        for e in entries[1:]:
            assert e.T_fixed_cam is not None  # others are posed
            w2c.append(geometry.invert(e.T_fixed_cam) @ current.T_fixed_cam)
        views = views_of(
            torch.stack([e.features for e in entries]),
            torch.stack([e.Kn for e in entries]),
            torch.as_tensor(np.stack(w2c), dtype=torch.float32, device=self.device),
        )
        return ("mv" if use_mv else "sv"), entries, views

    def _sees_grid(self, entry: WindowEntry, current: WindowEntry, centres: np.ndarray) -> bool:
        """Whether any of the grid cell centres (N, 3) in the current camera lies in ``entry``'s view."""
        assert entry.T_fixed_cam is not None  # only posed frames are candidates
        T = geometry.invert(entry.T_fixed_cam) @ current.T_fixed_cam
        pts = torch.as_tensor(geometry.apply(T, centres), dtype=torch.float32, device=self.device)
        return not bool(project(pts, entry.Kn)[2].all())

    def views_for(
        self, current: WindowEntry, group: Sequence[WindowEntry] = ()
    ) -> tuple[str, list[WindowEntry], Views, list[torch.Tensor] | None]:
        """What a frame is queried with: head, entries, views and (fast path) folded maps."""
        head, entries, views = self.choose(current, group)
        return head, entries, views, (self.planes(entries, head) if self.cfg.model.fast else None)

    def planes(self, entries: list[WindowEntry], head: str) -> list[torch.Tensor]:
        """The entries' folded maps (hidden, H, W) for a head; each frame's is computed once and kept."""
        for e in entries:
            if head not in e.planes:
                e.planes[head] = folded.fold_features(self.model, e.features, head)
        return [e.planes[head] for e in entries]
