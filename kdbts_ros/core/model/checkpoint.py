"""The project's checkpoint format: one safetensors file with the architecture in its metadata.

safetensors holds raw tensors only, so loading can never run pickled code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from kdbts_ros.core.errors import UserError
from kdbts_ros.core.model.network import Architecture, DensityField, absent_head_prefixes
from kdbts_ros.core.model.registry import release_file
from kdbts_ros.core.model.resnet import BACKBONES

FORMAT = "kdbts_ros/1"
# widths a recorded architecture may claim: a hostile record must not make us allocate terabytes
_MAX_WIDTH = 4096


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def save_checkpoint(path: str | Path, model: DensityField, info: dict | None = None) -> None:
    """Write weights and architecture (plus free-form info such as training resolution)."""
    meta = {
        "format": FORMAT,
        "architecture": json.dumps(dataclasses.asdict(model.arch)),
        "heads": json.dumps(model.available_heads),
        "info": json.dumps(info or {}),
    }
    skip = absent_head_prefixes(model.available_heads)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith(skip)}
    # through Python's file calls: a missing folder or a full disk is an OSError naming the file, and
    # an interrupted or failed write leaves the previous checkpoint, never half of a new one
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_bytes(save(tensors, metadata=meta))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> tuple[DensityField, dict]:
    """Build the network a checkpoint describes and load it strictly; returns (model, info).

    ``path`` may also be a release name (``kdbts weights list``): its file in the cache is loaded.
    """
    cached = release_file(path)
    if cached is not None:
        if not cached.is_file():  # never downloaded here: the node must not fetch at start-up
            raise CheckpointError(
                f"{path}: official weights not fetched yet (no {cached}); run 'kdbts weights get {path}' first"
            )
        path = cached
    _require_content(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open handles are not iterable
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: format {meta.get('format')!r} is not {FORMAT!r}; convert official checkpoints with 'kdbts import'"
        )
    try:
        arch = Architecture(**json.loads(meta["architecture"]))
        info = json.loads(meta.get("info", "{}"))
        heads = [h for h in json.loads(meta.get("heads", '["sv", "mv"]')) if h in ("sv", "mv")]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: architecture record unreadable ({exc})") from exc
    problem = architecture_problem(arch)
    if problem or not isinstance(info, dict):
        raise CheckpointError(f"{path}: invalid architecture record ({problem or 'info is not a mapping'})")
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


def architecture_problem(arch: Architecture) -> str | None:
    """Why a recorded architecture cannot be built, or None."""
    if arch.backbone not in BACKBONES:
        return f"backbone {arch.backbone!r} is not one of {', '.join(BACKBONES)}"
    widths = {
        "feature_dim": arch.feature_dim,
        "sv_hidden": arch.sv_hidden,
        "mv_hidden": arch.mv_hidden,
        "mv_feature_dim": arch.mv_feature_dim,
    }
    for name, value in widths.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_WIDTH:
            return f"{name} {value!r} is not a width in [1, {_MAX_WIDTH}]"
    near, far = arch.z_near, arch.z_far
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (near, far)) or not 0 < near < far:
        return f"z_near {near!r} and z_far {far!r} must satisfy 0 < z_near < z_far"
    return None


def load_torch_file(path: str | Path) -> Any:
    """A ``torch.save`` file loaded with ``weights_only`` (no pickled code runs); CheckpointError names the file.

    torch's unpickler fails on foreign bytes with whatever the bytes lead it to (KeyError,
    EOFError, RuntimeError, UnicodeDecodeError, ...), so every failure of an existing file is the file's.
    """
    _require_content(path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise beside the one-line answer
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch explains at length how to load unsafely; the reason is the "WeightsUnpickler error"
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", str(exc), re.S)
        reason = " ".join((found.group(1) if found else _first_sentence(exc)).split())
        if reason.startswith("Unsupported global"):
            raise CheckpointError(
                f"{path}: refused, it carries pickled objects beyond tensors and containers (unsafe to load): {reason}"
            ) from exc
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({reason})") from exc
    except OSError:  # a folder, no access: the OSError names the file
        raise
    except Exception as exc:  # see the docstring
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {_first_sentence(exc)})"
        ) from exc


def _require_content(path: str | Path) -> None:
    """OSError naming the file when it cannot be opened (missing, a folder, no access); CheckpointError if empty."""
    with open(path, "rb") as f:
        if not f.read(1):
            raise CheckpointError(f"{path}: empty file")


def _first_sentence(exc: BaseException) -> str:
    """The first sentence of an error message: library errors go on with advice that does not apply here."""
    text = str(exc).strip().split("\n")[0]
    return text.split(". ")[0] or type(exc).__name__


def random_model(arch: Architecture, seed: int) -> DensityField:
    """A network with seeded random weights (the same for the same seed on every machine)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DensityField(arch)
