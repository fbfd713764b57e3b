"""The project's checkpoint format: one safetensors file with the architecture in its metadata.

safetensors holds raw tensors only, so loading can never run pickled code.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ...weights_registry import release_file
from .network import Architecture, DensityField, absent_head_prefixes

FORMAT = "kdbts_ros/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason."""


def save_checkpoint(path: str | Path, model: DensityField, info: dict | None = None) -> None:
    """Write weights and architecture (plus free-form info such as training resolution)."""
    meta = {"format": FORMAT, "architecture": json.dumps(dataclasses.asdict(model.arch)),
            "heads": json.dumps(model.available_heads), "info": json.dumps(info or {})}
    skip = absent_head_prefixes(model.available_heads)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith(skip)}
    save_file(tensors, str(path), metadata=meta)


def load_checkpoint(path: str | Path) -> tuple[DensityField, dict]:
    """Build the network a checkpoint describes and load it strictly; returns (model, info).

    ``path`` may also be a release name (``kdbts weights list``): its file in the cache is loaded.
    """
    cached = release_file(path)
    if cached is not None:
        if not cached.is_file():  # never downloaded here: the node must not fetch at start-up
            raise CheckpointError(f"{path}: official weights not fetched yet (no {cached}); "
                                  f"run 'kdbts weights get {path}' first")
        path = cached
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}; "
                              "convert official checkpoints with 'kdbts import'")
    try:
        arch = Architecture(**json.loads(meta["architecture"]))
        info = json.loads(meta.get("info", "{}"))
        heads = [h for h in json.loads(meta.get("heads", '["sv", "mv"]')) if h in ("sv", "mv")]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: architecture record unreadable ({exc})") from exc
    model = DensityField(arch)
    try:
        result = model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # shape mismatch against the recorded architecture
        raise CheckpointError(f"{path}: weights do not fit the recorded architecture ({exc})") from exc
    skip = absent_head_prefixes(heads)
    missing = [k for k in result.missing_keys if not k.startswith(skip)]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{path}: missing keys {missing[:5]}, unexpected keys {result.unexpected_keys[:5]}")
    model.available_heads = heads
    return model, info


def random_model(arch: Architecture, seed: int) -> DensityField:
    """A network with seeded random weights (the same for the same seed on every machine)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DensityField(arch)
