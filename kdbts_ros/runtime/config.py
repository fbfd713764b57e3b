"""The runner's configuration: the frame path's settings plus the topics it reads and writes.

What node, replay and demo run with. The node adds its own settings (:mod:`kdbts_ros.ros.config`);
its parameter files hold them too, and offline tools read those files with :func:`load_runner_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.settings import load_config
from kdbts_ros.messages.topics import TopicsConfig


@dataclass
class RunnerConfig(PipelineConfig):
    """:class:`PipelineConfig` plus the input and output topics (``topics.*``)."""

    topics: TopicsConfig = field(default_factory=TopicsConfig)

    def check(self) -> None:
        """Cross-field checks of the pipeline's settings and the topics; raises ValueError."""
        super().check()
        self.topics.check()


# the settings (and sections) only the node reads: kdbts_ros.ros.config.NodeConfig adds them to
# RunnerConfig, and a test keeps this list equal to what it adds
NODE_SETTINGS = ("tf_builtin", "input_reliable", "autostart", "publish")


def load_runner_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunnerConfig:
    """A node parameter file (or a plain settings file) and ``overrides`` as the runner's config.

    The node's own settings in the file are passed by; any other setting the runner lacks is refused.
    """
    return load_config(RunnerConfig, path, overrides, read_elsewhere=NODE_SETTINGS)
