"""The planner stage: each posed frame's occupancy grid in the planner's frame (``planner.*``).

The grid's frame is found in TF at the frame's stamp (``planner.frame``, a base frame); when TF has
no such frame the grid is built in the fixed frame, turned by ``map.up_axis``'s rule so that its z
is up (the identity for a REP-103 ``odom``), as a square window around the camera. Which frame the
grid is in is said once when it changes (a ``planner_frame_fallback`` fault) and in the diagnostics.
"""

from __future__ import annotations

import numpy as np

from kdbts_ros.core import geometry
from kdbts_ros.core.field import FieldQuery, Query
from kdbts_ros.core.frames import Frame
from kdbts_ros.core.grids import bev_occupancy
from kdbts_ros.core.planar_grid import PlanarGridSpec, PlannerGrid, near_field, planar_spec
from kdbts_ros.core.tf_buffer import TfError, TfStore
from kdbts_ros.core.world_map import gravity_rotation, up_axis_of
from kdbts_ros.runtime.accounting import Accounting
from kdbts_ros.runtime.config import RunnerConfig

# Entries of the camera-from-grid transform (rotation, metres) within which the grid has not moved: a cell 50 m
# away then moves by under 0.1 mm (field.SAME_CELL_M)
SAME_POSE = 1e-6


class PlannerStage:
    """Builds :class:`~kdbts_ros.core.planar_grid.PlannerGrid` s; remembers which frame they are in."""

    def __init__(self, cfg: RunnerConfig, tf: TfStore, accounting: Accounting):
        self.cfg, self.tf, self.accounting = cfg, tf, accounting
        self.frame_id: str | None = None  # the frame of the last grid (None before the first)
        self._centres: tuple[PlanarGridSpec, np.ndarray, np.ndarray] | None = None  # spec, T_cam_plan, centres

    @property
    def enabled(self) -> bool:
        """Whether the occupancy grid is the planner's (else the camera-aligned slab's bird's-eye view)."""
        return self.cfg.planner.frame != "camera"

    def grid(self, frame: Frame, field: FieldQuery, query: Query) -> PlannerGrid | None:
        """The planner grid of a posed frame (None without a pose: nothing places it in the world)."""
        if frame.T_fixed_cam is None:
            return None
        g, T_fixed_cam = self.cfg.planner, frame.T_fixed_cam
        try:
            T_fixed_plan = self.tf.lookup(self.cfg.fixed_frame, g.frame, frame.stamp_ns)
            frame_id, spec, T_frame_plan = g.frame, planar_spec(g), np.eye(4)
        except TfError as exc:
            T_plan_fixed = gravity_rotation(up_axis_of(T_fixed_cam, self.cfg.map.up_axis))
            T_fixed_plan = T_frame_plan = geometry.invert(T_plan_fixed)
            frame_id, spec = self.cfg.fixed_frame, planar_spec(g, (T_plan_fixed @ T_fixed_cam)[:2, 3])
            if self.frame_id != frame_id:
                self.accounting.fault(
                    "planner_frame_fallback",
                    f"planner.frame {g.frame!r} is not in TF ({exc}): the occupancy grid is in {frame_id!r}",
                )
        self.frame_id = frame_id
        T_cam_plan = geometry.invert(T_fixed_cam) @ T_fixed_plan
        centres = self._cells_in_camera(spec, T_cam_plan)
        density, unseen = (a.reshape(spec.shape) for a in field.grid(centres, query))
        # nearer than the camera renders is unknown, never free: the world map keeps what earlier frames saw
        unseen = unseen | near_field(centres, self.cfg.model.z_near)
        values = bev_occupancy(density, unseen, spec.resolution_z)
        ground = T_fixed_plan[:3, :3] @ np.array([0.0, 0.0, g.ground_z]) + T_fixed_plan[:3, 3]
        return PlannerGrid(values, frame_id, T_frame_plan @ spec.origin(), spec.resolution, frame_id == g.frame, ground)

    def _cells_in_camera(self, spec: PlanarGridSpec, T_cam_plan: np.ndarray) -> np.ndarray:
        """The grid's cell centres in the camera (float32), the last frame's array while the grid and its pose in
        the camera stay: a base frame rigid with the camera comes back through the moving odom frame with about
        1e-6 of rounding noise, and forming 96,000 centres again took 12 ms a frame."""
        if self._centres is not None:
            kept_spec, kept_T, centres = self._centres
            if kept_spec == spec and np.abs(kept_T - T_cam_plan).max() <= SAME_POSE:
                return centres
        centres = (spec.centres() @ T_cam_plan[:3, :3].T + T_cam_plan[:3, 3]).astype(np.float32)
        self._centres = (spec, T_cam_plan, centres)
        return centres
