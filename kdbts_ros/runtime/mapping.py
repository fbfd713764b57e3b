"""The runner's map stage: each posed processed frame fused into the world map, published at ``map.publish_rate``.

Owned by :class:`kdbts_ros.runtime.runner.FrameRunner` while ``map.enabled`` (a run-time
parameter: switching it on builds an empty map, off releases it). The map reads the live
``map.*`` settings, so run-time changes of the others apply from the next frame.

Accounting: a frame the map cannot fuse (no pose in the fixed frame, a non-finite or non-rigid
pose, non-finite densities) is counted as the fault ``map_skipped_<reason>``, not a drop: the
image itself was used and its outputs published (the per-camera counts still add up), only the
map went without it. Resets are counted as the fault ``map_reset_<reason>``.

Time jumps are detected by the runner (image stamps or the clock going back, a forward gap beyond
``map.max_time_gap``), which calls :meth:`MapStage.time_jump`; ``map.time_jump_rule`` reset clears
the map there (the fault ``map_reset_time_jump``), keep fuses on into the map as it is.

Gravity, one rule (``map.up_axis``): the map is built in a gravity-aligned frame, the fixed frame
turned by :func:`kdbts_ros.core.world_map.gravity_rotation` so that its up axis becomes z. ``auto``
takes as up the fixed frame's axis nearest to the first fused camera's up (-y of its optical frame),
chosen once per map; an explicit axis (``+z``, ``-y``, ...) overrides it. What is published stays in
the fixed frame: the occupied-voxel cloud is turned back into it, and the 2-D OccupancyGrid's origin
pose carries the rotation (the identity for a REP-103 ``odom``, as nav2 needs: it reads only the
origin's position). The saved pgm + yaml, whose origin has no room for a tilt, are in the
gravity-aligned frame; the saved cloud is in the fixed frame.

Ground, the planner grid's rule: the 2-D map's band (``map.min_z`` .. ``max_z``) is measured from the
ground under ``planner.frame`` at the latest fused frame (its origin plus ``planner.ground_z``, from
the planner grid), or from ``planner.ground_z`` in the gravity-aligned frame when there is no planner
grid; never from the camera, whose pitch would move obstacles in and out of the band.

Publishing is paced by message stamps, not wall time, so a bag replayed at any speed publishes
the same maps: a frame publishes when at least ``1 / publish_rate`` of stamp time passed since
the last publication (the first fused frame, and the first after a reset, publish at once).
Maps are built only for the topics wanted.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import numpy as np

from kdbts_ros.core.frames import Outputs
from kdbts_ros.core.map_2d import occupancy_2d
from kdbts_ros.core.world_map import WorldMap, gravity_rotation, pose_problem, transform, up_axis_of
from kdbts_ros.data import map_files
from kdbts_ros.messages import published
from kdbts_ros.messages.topics import OUTPUT
from kdbts_ros.runtime.accounting import Accounting
from kdbts_ros.runtime.config import RunnerConfig

log = logging.getLogger("kdbts_ros")
PUBLISH_SLACK_NS = 1_000_000  # stamps 1 ms short of the period still publish (camera clocks jitter)


def _slug(reason: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_")


class MapStage:
    """The world map of a runner, its publication pacing and its saving; thread-safe (the node's services)."""

    def __init__(self, cfg: RunnerConfig, accounting: Accounting):
        self.cfg, self.accounting = cfg, accounting
        self.map: WorldMap | None = None
        self._lock = threading.Lock()  # the step thread fuses, service callbacks clear and save
        self._last_publish_ns: int | None = None
        self.up_axis: str | None = None  # the fixed frame's axis taken as up; None until the first fused frame
        self.T_map_fixed = np.eye(4)  # the gravity-aligned map frame's rotation from the fixed frame
        self.ground_z = cfg.planner.ground_z  # the ground's height in the map frame, under the latest fused frame
        self.configure()

    @property
    def enabled(self) -> bool:
        return self.map is not None

    def configure(self) -> None:
        """Build the map when ``map.enabled`` was switched on, release it when off (between frames)."""
        with self._lock:
            if self.cfg.map.enabled and self.map is None:
                self.map = WorldMap(self.cfg.map)
                self._last_publish_ns = None
                self.up_axis, self.T_map_fixed = None, np.eye(4)
            elif not self.cfg.map.enabled:
                self.map = None

    def wanted(self, wanted: set[str] | None) -> tuple[bool, bool]:
        """Whether the 2-D map and the occupied-voxel cloud are wanted (None: every output)."""
        t = self.cfg.topics
        return wanted is None or t.map in wanted, wanted is None or t.map_points in wanted

    # ------------------------------------------------------------ per frame
    def frame(self, out: Outputs, wanted: set[str] | None) -> list[tuple[str, str, object]]:
        """Fuse a processed frame; the map messages due at its stamp (topic, msgtype, message)."""
        with self._lock:
            wmap = self.map
            if wmap is None:
                return []
            if out.out_frame != self.cfg.fixed_frame or not out.density.size:
                reason: str | None = wmap.skip(f"no pose in {self.cfg.fixed_frame}")
            else:
                T = out.T_out_cam
                if pose_problem(T) is None:  # else integrate counts it
                    T = self._gravity(T) @ T
                reason = wmap.integrate(
                    out.density, out.unseen, out.spec, T, self.cfg.grid.occupied_density, out.stamp_ns
                )
                if reason is None:
                    self._ground(out)
            if reason is not None:
                self.accounting.fault(
                    f"map_skipped_{_slug(reason)}",
                    f"frame at {out.stamp_ns * 1e-9:.3f} s not fused into the map: {reason}",
                )
                return []
            return self._due(out.stamp_ns, wanted)

    def _gravity(self, T_fixed_cam: np.ndarray) -> np.ndarray:
        """T_map_fixed, chosen at the first fused frame by ``map.up_axis`` (auto: from this camera's up)."""
        if self.up_axis is None:
            axis = self.cfg.map.up_axis
            self.up_axis = up_axis_of(T_fixed_cam, axis)
            self.T_map_fixed = gravity_rotation(self.up_axis)
            log.info(
                "world map: up is %s's %s axis (%s)",
                self.cfg.fixed_frame,
                self.up_axis,
                "map.up_axis auto: nearest the first camera's up" if axis == "auto" else "map.up_axis",
            )
        return self.T_map_fixed

    def _ground(self, out: Outputs) -> None:
        """Follow the ground under the planner frame (TF), or ``planner.ground_z`` in the map frame without one."""
        if out.planner is not None:
            self.ground_z = float(self.T_map_fixed[2, :3] @ out.planner.ground + self.T_map_fixed[2, 3])
        else:  # no planner grid (planner.frame camera): the fixed frame's own ground, as the planner's fallback
            self.ground_z = self.cfg.planner.ground_z

    def _fixed_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The map's occupied voxel centres in the fixed frame, and their probabilities."""
        points, prob = self.map.occupied_points() if self.map is not None else (np.zeros((0, 3)), np.zeros(0))
        return transform(self.T_map_fixed.T, points), prob

    def _due(self, stamp: int, wanted: set[str] | None) -> list[tuple[str, str, object]]:
        rate = self.cfg.map.publish_rate
        want_map, want_points = self.wanted(wanted)
        if rate <= 0 or not (want_map or want_points) or self.map is None:
            return []
        last = self._last_publish_ns
        if last is not None and last <= stamp < last + int(1e9 / rate) - PUBLISH_SLACK_NS:
            return []
        self._last_publish_ns = stamp
        return self._messages(stamp, want_map, want_points)

    def _messages(self, stamp: int, want_map: bool, want_points: bool) -> list[tuple[str, str, object]]:
        wmap = self.map
        assert wmap is not None  # _due checked it under the lock
        t, frame_id, msgs = self.cfg.topics, self.cfg.fixed_frame, []
        if want_map:
            grid = occupancy_2d(wmap, self.ground_z)
            if grid is not None:
                msg = published.occupancy_grid_map(grid, stamp, frame_id, self.T_map_fixed.T)
                msgs.append((t.map, OUTPUT["map"].msgtype, msg))
        if want_points:
            points, prob = self._fixed_points()
            msgs.append(
                (t.map_points, OUTPUT["map_points"].msgtype, published.map_points(points, prob, stamp, frame_id))
            )
        return msgs

    def time_jump(self, reason: str) -> None:
        """Time jumped (``reason`` from :mod:`kdbts_ros.runtime.time_jumps`): apply ``map.time_jump_rule``.

        reset: the map is cleared before the next frame (the fault ``map_reset_time_jump``); keep:
        the next frame fuses into the map as it is (decayed by the time since the last frame when
        the stamps went forward, not at all when they went back). Either way the next fused frame
        publishes at once.
        """
        with self._lock:
            if self.map is None:
                return
            self._last_publish_ns = None
            if self.cfg.map.time_jump_rule == "reset":
                self.map.reset("time jump")
                self.accounting.fault(
                    "map_reset_time_jump", f"the map was cleared: {reason} (map.time_jump_rule reset)"
                )

    # ------------------------------------------------------------ services
    def clear(self) -> bool:
        """Forget the map (``~/clear_map``); False when the map is off."""
        with self._lock:
            if self.map is None:
                return False
            self.map.reset("requested")
            self._last_publish_ns = None
            return True

    def save(self, stem: str | Path, cloud_format: str = "pcd") -> list[Path]:
        """Write ``stem.<cloud_format>`` (occupied voxels in the fixed frame, open3d) and ``stem.pgm`` + ``stem.yaml``
        (map_server; in the gravity-aligned map frame, the fixed frame itself when its z is up).

        Raises ValueError when the map is off or empty, OSError when a file cannot be written.
        """
        with self._lock:
            if self.map is None:
                raise ValueError("the map is off (map.enabled false)")
            if self.map.origin is None:
                raise ValueError("the map is empty: no frame fused yet")
            stem = Path(stem).expanduser()
            cloud = stem.with_suffix(f".{cloud_format}")  # as the pgm and yaml beside it
            map_files.save_points(cloud, *self._fixed_points())
            grid = occupancy_2d(self.map, self.ground_z)
            assert grid is not None  # the map holds a frame
            pgm, meta = map_files.save_pgm_yaml(stem, grid)
            return [cloud, pgm, meta]

    def status(self) -> dict[str, object]:
        """Diagnostic values ``map_*`` (empty when the map is off)."""
        with self._lock:
            if self.map is None:
                return {}
            s = self.map.status()
            return {
                "map_frames": s["frames"],
                "map_skipped": sum(s["skipped"].values()),
                "map_resets": sum(s["resets"].values()),
                "map_known_cells": s["known"],
                "map_occupied_cells": s["occupied"],
                "map_tilted_frames": s["tilted"],
                "map_up_axis": self.up_axis or "not chosen yet",
                "map_memory_mb": f"{self.map.nbytes() / 2**20:.1f}",
            }
