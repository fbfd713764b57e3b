"""Where the network runs and which weights it gets: the device, the embedded checkpoint, the model."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.lens import KITTI_360, CanonicalCamera
from kdbts_ros.core.model.checkpoint import load_checkpoint, random_model
from kdbts_ros.core.model.network import DensityField, architecture_of
from kdbts_ros.core.settings import ConfigError


def synced_time(device: torch.device) -> float:
    """Wall time after the device has finished its queued work (so stage timings are true on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def pick_device(name: str) -> torch.device:
    """Resolve 'auto' to CUDA when available; ConfigError for a name torch does not know or a GPU it lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device {name!r}: not a torch device (auto, cpu, cuda, cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: torch sees no CUDA GPU (use cpu or auto)")
    return device


# The KDBTS network trained on the procedural benchmark (README, "Benchmark"); ships with the package.
EMBEDDED_CHECKPOINT = Path(__file__).resolve().parents[1] / "weights" / "kdbts_real.safetensors"
OFFICIAL_INPUT_SIZE = (192, 640)


def checkpoint_camera(info: dict, input_size: tuple[int, int] | None = None) -> CanonicalCamera:
    """The camera a checkpoint's network sees every frame through, at ``input_size`` (height, width; default:
    the checkpoint's training size). LensError when its camera record is malformed.

    A checkpoint that states none (random weights, older files) was trained, as the official BTS/KDBTS
    default, with KITTI-360's perspective camera.
    """
    H, W = input_size or (
        int(info.get("image_height", OFFICIAL_INPUT_SIZE[0])),
        int(info.get("image_width", OFFICIAL_INPUT_SIZE[1])),
    )
    record = info.get("camera")
    if record is None:
        return CanonicalCamera.from_normalised(KITTI_360, W, H)
    return CanonicalCamera.from_record(record).at_size(W, H)


def build_model(cfg: PipelineConfig) -> tuple[DensityField, dict]:
    """Load the configured checkpoint (empty: the embedded one), or seeded random weights for 'random'."""
    m = cfg.model
    if m.checkpoint == "random":
        return random_model(architecture_of(m), m.seed), {"weights": f"random (seed {m.seed})"}
    path = m.checkpoint or EMBEDDED_CHECKPOINT
    model, info = load_checkpoint(path)
    return model, {"weights": str(path), **info}
