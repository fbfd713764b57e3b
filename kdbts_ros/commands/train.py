"""``kdbts train``: BTS, MVBTS or KDBTS trained as the config says (single process, or one per GPU under torchrun)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kdbts_ros.commands.common import overrides

HELP = "train BTS / MVBTS / KDBTS (single process or under torchrun with DDP)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="training YAML (see config/train_*.yaml); default: built-in")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="run folder: checkpoint.safetensors, state.pt (resume), metrics.jsonl, tb/",
    )
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="override settings, e.g. iterations=100 loss.kd=0.05"
    )
    p.add_argument("--restart", action="store_true", help="ignore OUT/state.pt and start from step 0")
    p.add_argument(
        "--resume-from",
        type=Path,
        help="when OUT has no state.pt: continue from this checkpoint's weights and compact state (its step, "
        "schedule and random streams; Adam's moments start again), e.g. the committed embedded default",
    )
    p.add_argument(
        "--max-minutes", type=float, default=0.0, help="stop after this much wall-clock time (0: run all iterations)"
    )


def run(args: argparse.Namespace) -> int:
    """Train; resumes from OUT/state.pt when present, else from a checkpoint's compact state. Only rank 0 of a DDP
    run prints."""
    from kdbts_ros.core.settings import load_config
    from kdbts_ros.training.config import TrainConfig
    from kdbts_ros.training.trainer import train

    cfg = load_config(TrainConfig, args.config, overrides(args.set))
    model = train(cfg, args.out, resume=not args.restart, max_minutes=args.max_minutes, resume_from=args.resume_from)
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"heads trained: {model.available_heads}; wrote {args.out / 'checkpoint.safetensors'} "
            f"and {args.out / 'metrics.jsonl'}"
        )
    return 0
