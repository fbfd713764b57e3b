"""Import of official BTS / MVBTS / KDBTS training checkpoints into the project's format.

Official checkpoints are ignite ``torch.save`` files with a ``model`` state dict
whose keys start with ``renderer.net.`` (the network) and ``renderer.renderer.``
(renderer step counters). They are read with ``weights_only=True``, so a file
carrying any pickled object other than tensors and plain containers is refused
before anything in it runs.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import CheckpointError, save_checkpoint
from .network import HEAD_NAMES, MV_HEAD, SV_HEAD, Architecture, DensityField, absent_head_prefixes

NET_PREFIX = "renderer.net."
RENDERER_PREFIX = "renderer.renderer."
# BTS names its single-view MLP ``mlp_coarse``; KDBTS calls the same shapes ``heads.singleviewhead``
RENAMES = ((re.compile(r"^mlp_coarse\."), f"heads.{SV_HEAD}."),)
ENCODER = "encoder.encoder.encoder."


@dataclass
class ImportReport:
    """What an import mapped, ignored and could not fill."""

    architecture: Architecture
    heads: list[str]
    mapped: int = 0
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def absent(self) -> tuple[str, ...]:
        """State-dict prefixes of the heads the checkpoint does not have (BTS: the multi-view head)."""
        return absent_head_prefixes(self.heads)

    @property
    def complete(self) -> bool:
        """Every network weight came from the file, except those of a wholly absent head: safe to write."""
        return not self.unexpected and bool(self.heads) and all(k.startswith(self.absent) for k in self.missing)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of an official checkpoint (or a bare state dict), loaded safely."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused, it carries pickled objects beyond tensors and containers "
                              f"(unsafe to load): {str(exc).splitlines()[0]}") from exc
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    sd = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: no state dict found (expected a 'model' entry of tensors)")
    return sd


def map_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official keys to project keys; returns the mapped dict and the keys deliberately ignored."""
    out, ignored = {}, []
    for key, value in sd.items():
        if key.startswith(RENDERER_PREFIX):
            ignored.append(key)  # training step counters of the renderer, no weights
            continue
        k = key[len(NET_PREFIX):] if key.startswith(NET_PREFIX) else key
        for pattern, repl in RENAMES:
            k = pattern.sub(repl, k)
        out[k] = value
    return out, ignored


def infer_architecture(sd: dict[str, torch.Tensor], z_near: float = 3.0, z_far: float = 80.0) -> Architecture:
    """Backbone, feature width and head sizes read from the tensor shapes."""
    if f"{ENCODER}conv1.weight" not in sd:
        raise CheckpointError("no ResNet encoder weights (encoder.encoder.encoder.conv1.weight) in the checkpoint")
    blocks = {i: len({k.split(".")[4] for k in sd if k.startswith(f"{ENCODER}layer{i}.")}) for i in (1, 2, 3, 4)}
    bottleneck = f"{ENCODER}layer1.0.conv3.weight" in sd
    layouts = {(False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34",
               (True, (3, 4, 6, 3)): "resnet50"}
    backbone = layouts.get((bottleneck, tuple(blocks[i] for i in (1, 2, 3, 4))))
    if backbone is None:
        raise CheckpointError(f"unsupported encoder layout: blocks {blocks}, bottleneck {bottleneck}")
    if "encoder.decoder.decoder.10.conv.weight" not in sd:
        raise CheckpointError("no decoder weights (encoder.decoder.decoder.10.conv.weight) in the checkpoint")
    feature_dim = sd["encoder.decoder.decoder.10.conv.weight"].shape[0]
    sv = sd.get(f"heads.{SV_HEAD}.lin_in.weight")
    mv = sd.get(f"heads.{MV_HEAD}.mlp.lin_in.weight")
    mv2 = sd.get(f"heads.{MV_HEAD}.mlp2.lin_in.weight")
    return Architecture(backbone, int(feature_dim), int(sv.shape[0]) if sv is not None else 64,
                        int(mv.shape[0]) if mv is not None else 128,
                        int(mv2.shape[0]) if mv2 is not None else 16, z_near, z_far)


def import_official(path: str | Path) -> tuple[DensityField, ImportReport]:
    """Build the network an official checkpoint describes and load every weight by name."""
    mapped, ignored = map_keys(read_state_dict(path))
    arch = infer_architecture(mapped)
    model = DensityField(arch)
    expected = model.state_dict()
    heads = [short for short, name in HEAD_NAMES.items() if any(k.startswith(f"heads.{name}.") for k in mapped)]
    report = ImportReport(arch, heads, ignored=ignored)
    report.missing = sorted(k for k in expected if k not in mapped)
    report.unexpected = sorted(k for k in mapped if k not in expected)
    bad_shape = [k for k in mapped if k in expected and mapped[k].shape != expected[k].shape]
    if bad_shape:
        raise CheckpointError(f"{path}: shapes differ from the inferred architecture for {bad_shape[:5]}")
    model.load_state_dict({k: v for k, v in mapped.items() if k in expected}, strict=False)
    report.mapped = sum(k in expected for k in mapped)
    return model, report


def save_imported(path: str | Path, model: DensityField, report: ImportReport, source: str) -> None:
    """Write an imported network in the project format, its absent heads marked unavailable."""
    model.available_heads = report.heads
    # every released BTS / MVBTS / KDBTS network was trained at 192x640; the node resizes to it by default
    save_checkpoint(path, model, {"source": source, "imported_from": "official",
                                  "image_height": 192, "image_width": 640})
