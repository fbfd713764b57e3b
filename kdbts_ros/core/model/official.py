"""Import of official BTS / MVBTS / KDBTS training checkpoints into the project's format.

Official checkpoints are ignite ``torch.save`` files with a ``model`` state dict
whose keys start with ``renderer.net.`` (the network) and ``renderer.renderer.``
(renderer step counters). They are read with ``weights_only=True``, so a file
carrying any pickled object other than tensors and plain containers is refused
before anything in it runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kdbts_ros.core.lens import KITTI_360, KITTI_RAW, CanonicalCamera
from kdbts_ros.core.model.checkpoint import CheckpointError, architecture_problem, load_torch_file, save_checkpoint
from kdbts_ros.core.model.network import HEAD_NAMES, MV_HEAD, SV_HEAD, Architecture, DensityField, absent_head_prefixes

# the official configs' training cameras (normalised fx, fy, cx, cy), by data set
OFFICIAL_CAMERAS = {"kitti-360": KITTI_360, "kitti-raw": KITTI_RAW}
NET_PREFIX = "renderer.net."
RENDERER_PREFIX = "renderer.renderer."
# BTS names its single-view MLP ``mlp_coarse``; KDBTS calls the same shapes ``heads.singleviewhead``
RENAMES = ((re.compile(r"^mlp_coarse\."), f"heads.{SV_HEAD}."),)
ENCODER = "encoder.encoder.encoder."
DECODER_OUT = "encoder.decoder.decoder.10.conv.weight"  # its output channels are the feature width


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
    obj = load_torch_file(path)
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
        k = key[len(NET_PREFIX) :] if key.startswith(NET_PREFIX) else key
        for pattern, repl in RENAMES:
            k = pattern.sub(repl, k)
        out[k] = value
    return out, ignored


def infer_architecture(sd: dict[str, torch.Tensor], z_near: float = 3.0, z_far: float = 80.0) -> Architecture:
    """Backbone, feature width and head sizes read from the tensor shapes."""
    for key in (f"{ENCODER}conv1.weight", DECODER_OUT):
        if key not in sd:
            raise CheckpointError(f"no {key} in the checkpoint: not a BTS / MVBTS / KDBTS network")
    blocks = {i: len({k.split(".")[4] for k in sd if k.startswith(f"{ENCODER}layer{i}.")}) for i in (1, 2, 3, 4)}
    bottleneck = f"{ENCODER}layer1.0.conv3.weight" in sd
    layouts: dict[tuple[bool, tuple[int, ...]], str] = {
        (False, (2, 2, 2, 2)): "resnet18",
        (False, (3, 4, 6, 3)): "resnet34",
        (True, (3, 4, 6, 3)): "resnet50",
    }
    backbone = layouts.get((bottleneck, tuple(blocks[i] for i in (1, 2, 3, 4))))
    if backbone is None:
        raise CheckpointError(f"unsupported encoder layout: blocks {blocks}, bottleneck {bottleneck}")
    if DECODER_OUT not in sd:
        raise CheckpointError(f"no decoder weights ({DECODER_OUT}) in the checkpoint")
    arch = Architecture(
        backbone,
        _rows(sd, DECODER_OUT, 0),
        _rows(sd, f"heads.{SV_HEAD}.lin_in.weight", 64),
        _rows(sd, f"heads.{MV_HEAD}.mlp.lin_in.weight", 128),
        _rows(sd, f"heads.{MV_HEAD}.mlp2.lin_in.weight", 16),
        z_near,
        z_far,
    )
    problem = architecture_problem(arch)
    if problem:
        raise CheckpointError(f"the tensor shapes describe no buildable network: {problem}")
    return arch


def _rows(sd: dict[str, torch.Tensor], key: str, default: int) -> int:
    """Output width of a weight (its first dimension), or ``default`` when the checkpoint lacks it."""
    t = sd.get(key)
    if t is None:
        return default
    if t.ndim == 0:
        raise CheckpointError(f"{key} is a scalar, not a weight")
    return int(t.shape[0])


def import_official(path: str | Path) -> tuple[DensityField, ImportReport]:
    """Build the network an official checkpoint describes and load every weight by name."""
    mapped, ignored = map_keys(read_state_dict(path))
    try:
        arch = infer_architecture(mapped)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
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


def official_camera(source: str) -> str | None:
    """The official training camera a checkpoint's name or URL says (``kitti-360``, ``kitti-raw``), or None.

    The releases live below ``kitti_360`` / ``kitti-360`` and ``kitti_raw`` / ``kitti`` (registry paths);
    the official configs name their data sets alike.
    """
    name = source.lower().replace("_", "-")
    if "kitti-360" in name or "kitti360" in name:
        return "kitti-360"
    return "kitti-raw" if "kitti" in name else None


def save_imported(path: str | Path, model: DensityField, report: ImportReport, source: str, camera: str) -> None:
    """Write an imported network in the project format, its absent heads marked unavailable, with the camera its
    official config trained it with (``camera``: a key of :data:`OFFICIAL_CAMERAS`)."""
    model.available_heads = report.heads
    # every released BTS / MVBTS / KDBTS network was trained at 192x640 in its data set's default camera
    H, W = 192, 640
    info = {
        "source": source,
        "imported_from": "official",
        "image_height": H,
        "image_width": W,
        "camera": CanonicalCamera.from_normalised(OFFICIAL_CAMERAS[camera], W, H).record(),
        "camera_name": camera,
    }
    save_checkpoint(path, model, info)
