"""Run-time parameter changes: validated and staged in any thread, applied at once between frames."""

from __future__ import annotations

import copy
import threading
from typing import Any

from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.settings import iter_params, set_param, set_params
from kdbts_ros.core.stages import Stages, mode_problem
from kdbts_ros.runtime.window import FrameWindow


class ParamStage:
    """Accepted changes wait apart from the live config (which the step thread reads) until :meth:`apply`."""

    def __init__(self, cfg: PipelineConfig, stages: Stages, window: FrameWindow):
        """``cfg`` is the live config, whose parts the stages hold; ``window`` is the runner's."""
        self.cfg, self.stages, self.window = cfg, stages, window
        self._lock = threading.Lock()
        self._next_cfg: PipelineConfig | None = None  # accepted run-time changes, applied between frames
        self._changed: set[str] = set()
        self._own_changes: list[tuple[str, Any]] = []  # changes the runner made itself, for the node to show

    def stage(self, changes: list[tuple[str, Any]]) -> None:
        """Accept several run-time changes together or none of them (an atomic parameter set); raises ValueError."""
        with self._lock:
            for name, value in changes:
                problem = mode_problem(self.stages.model, value) if name == "mode" else None
                if problem:
                    raise ValueError(problem)
            # staged apart from the live config, which the step thread reads
            staged = copy.deepcopy(self._next_cfg or self.cfg)
            set_params(staged, changes)
            self._next_cfg = staged
            self._changed.update(name for name, _ in changes)

    def apply(self) -> None:
        """Copy accepted changes into the live config (whose parts the stages hold); between frames."""
        with self._lock:
            changed, names, self._next_cfg, self._changed = self._next_cfg, self._changed, None, set()
        if changed is None:
            return
        for spec in iter_params(changed):
            if spec.name in names:
                set_param(self.cfg, spec.name, spec.default, check=False)
        if "window_size" in names:
            self.window.resize(self.cfg.window_size)
        if "model.fast" in names:
            self.stages.choose_path()

    def change(self, changes: list[tuple[str, Any]]) -> None:
        """Make changes of the runner's own (at once) and keep them for :meth:`take_own_changes`."""
        self.stage(changes)
        self.apply()
        with self._lock:
            self._own_changes.extend(changes)

    def take_own_changes(self) -> list[tuple[str, Any]]:
        """The changes the runner made itself since the last call (the node sets its parameters to them)."""
        with self._lock:
            changes, self._own_changes = self._own_changes, []
        return changes
