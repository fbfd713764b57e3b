"""Which head a frame is queried with and which encoded frames it reads: the rule of the head mode (``mode``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kdbts_ros.core import geometry
from kdbts_ros.core.camera import project
from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.field import Query
from kdbts_ros.core.frames import EncodedFrame
from kdbts_ros.core.grids import GridSpec
from kdbts_ros.core.model.network import DensityField
from kdbts_ros.core.stages import heads_for_mode


class HeadChoice:
    """The head choice of the configured mode over the window's posed frames (``cfg`` is read live)."""

    def __init__(self, cfg: PipelineConfig, model: DensityField, device: torch.device):
        self.cfg, self.model, self.device = cfg, model, device

    def for_mode(self) -> list[str]:
        """Heads the current mode may query, so a new frame's folded maps are made when it is encoded."""
        return heads_for_mode(self.model, self.cfg)

    def choose(
        self, current: EncodedFrame, group: Sequence[EncodedFrame], window: Sequence[EncodedFrame], spec: GridSpec
    ) -> tuple[str, list[EncodedFrame]]:
        """The head to query and the frames it reads: current first, then its rig frame, then ``window`` (posed).

        ``window``: the window's posed frames, newest first. ``auto`` takes the multi-view head
        when another posed frame sees the grid ``spec``.
        """
        mode, others = self.cfg.mode, []
        if current.T_fixed_cam is not None:
            seen = {id(current)}
            for e in [*group, *window]:
                if e.T_fixed_cam is not None and id(e) not in seen:
                    seen.add(id(e))
                    others.append(e)
        if mode == "auto" and others:
            centres = spec.centres_cam().reshape(-1, 3)  # once, not per view
            others = [e for e in others if self._sees_grid(e, current, centres)]
        use_mv = "mv" in self.model.available_heads and (mode == "mv" or (mode == "auto" and bool(others)))
        return ("mv" if use_mv else "sv"), [current] + (others if use_mv else [])

    def depth_query(self, query: Query) -> Query:
        """The query the depth image is rendered with: the frame's (``render.depth_head`` frame, or an SV query
        already), else the single-view head on the frame alone (when the weights have one)."""
        if self.cfg.render.depth_head == "frame" or query.head == "sv" or "sv" not in self.model.available_heads:
            return query
        return Query.of("sv", query.entries[:1], self.device)

    def _sees_grid(self, entry: EncodedFrame, current: EncodedFrame, centres: np.ndarray) -> bool:
        """Whether any of the grid cell centres (N, 3) in the current camera lies in ``entry``'s view."""
        assert entry.T_fixed_cam is not None and current.T_fixed_cam is not None  # only posed frames are candidates
        T = geometry.invert(entry.T_fixed_cam) @ current.T_fixed_cam
        pts = torch.as_tensor(geometry.apply(T, centres), dtype=torch.float32, device=self.device)
        return not bool(project(pts, entry.Kn)[2].all())
