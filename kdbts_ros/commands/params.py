"""``kdbts params``: every parameter with its default, range and description (YAML or a Markdown table)."""

from __future__ import annotations

import argparse

HELP = "print the parameter table (node parameters and config keys)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        choices=("yaml", "markdown"),
        default="yaml",
        help="yaml: a commented parameter file like config/default.yaml",
    )
    p.add_argument("--train", action="store_true", help="the training settings (kdbts train --config) instead")


def run(args: argparse.Namespace) -> int:
    """Print the node's (or, with --train, the training) settings."""
    from kdbts_ros.core.settings import parameter_table, to_yaml
    from kdbts_ros.ros.config import NodeConfig

    if args.train:
        from kdbts_ros.training.config import TrainConfig

        cfg: TrainConfig | NodeConfig = TrainConfig()
    else:
        cfg = NodeConfig()
    print(to_yaml(cfg) if args.format == "yaml" else parameter_table(cfg), end="")
    return 0
