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
    from kdbts_ros.core.config import PipelineConfig, iter_params, to_yaml

    if args.train:
        from kdbts_ros.training.config import TrainConfig

        cfg: TrainConfig | PipelineConfig = TrainConfig()
    else:
        cfg = PipelineConfig()
    if args.format == "yaml":
        print(to_yaml(cfg), end="")
        return 0
    print("| parameter | default | range / choices | runtime | description |\n|---|---|---|---|---|")
    for s in iter_params(cfg):
        allowed = f"[{s.range[0]:g}, {s.range[1]:g}]" if s.range else ", ".join(s.choices or ())
        print(f"| `{s.name}` | `{s.default!r}` | {allowed} | {'yes' if s.runtime else 'no'} | {s.description} |")
    return 0
