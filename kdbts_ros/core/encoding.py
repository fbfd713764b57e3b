"""The encode stage: an image to its network-size RGB and its encoding (features, folded head maps).

How the features are made is a strategy chosen once at start-up (:func:`choose_encoder`):
torch's encoder, the same compiled with ``torch.compile`` (``model.compile``), or the exported
graph run by onnxruntime (``model.backend onnxruntime``), which also gives the folded maps of
the heads it was exported with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import cv2
import numpy as np
import torch

from kdbts_ros.core.camera import normalise_intrinsics
from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.frames import EncodedFrame, Frame
from kdbts_ros.core.model import folded
from kdbts_ros.core.model.network import DensityField
from kdbts_ros.core.model.onnx_backend import OnnxBackend, cached_export
from kdbts_ros.core.settings import ConfigError


class Prepared(NamedTuple):
    """An image at the network size: RGB (H, W, 3), its [0, 1] tensor (1, 3, H, W) and normalised intrinsics."""

    resized: np.ndarray
    image01: torch.Tensor
    Kn: torch.Tensor


class Encoder(Protocol):
    """Features (C, H, W) of an image (1, 3, H, W) in [0, 1], with the folded maps {head: map} it makes too."""

    def __call__(self, image01: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


class TorchEncoder:
    """The model's own encoder."""

    def __init__(self, model: DensityField):
        self.model = model

    def __call__(self, image01: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.model.encode(image01)[0], {}


class CompiledEncoder:
    """The model's encoder through ``torch.compile`` for its fixed input size (CUDA graphs on CUDA)."""

    def __init__(self, model: DensityField, device: torch.device):
        self._encode = torch.compile(
            model.encode, dynamic=False, mode="reduce-overhead" if device.type == "cuda" else None
        )

    def __call__(self, image01: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # a CUDA graph's output is overwritten by its next replay, and the window keeps features
        return self._encode(image01)[0].clone(), {}


class OnnxEncoder:
    """The exported encoder in onnxruntime: features and the exported heads' folded maps in one run."""

    def __init__(self, backend: OnnxBackend):
        self.backend = backend

    def __call__(self, image01: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.backend.encode(image01)


def choose_encoder(
    cfg: PipelineConfig,
    model: DensityField,
    device: torch.device,
    input_size: tuple[int, int],
    heads: Sequence[str],
    checkpoint: str,
) -> tuple[Encoder, dict]:
    """The encoder strategy the configuration asks for, and what to report about it (``backend_info``).

    onnxruntime: the network is exported (or the cached export reused) with the folded maps of
    ``heads``, the heads the configured mode queries; a head needed only after a run-time mode
    change is folded with torch.
    """
    m = cfg.model
    info: dict = {"backend": m.backend}
    if m.backend == "onnxruntime":
        if device.type != "cpu":
            raise ConfigError(
                f"model.backend onnxruntime runs on the CPU; model.device is {m.device!r} "
                "(use cpu or auto, or model.backend torch)"
            )
        problem = m.backend_problem()
        if problem:  # a configuration changed without check() (check() refuses it too)
            raise ConfigError(problem)
        if m.compile:
            raise ConfigError("model.compile compiles the torch encoder; with model.backend onnxruntime set it false")
        folder, export = cached_export(model, input_size, heads, checkpoint=checkpoint)
        info.update(export, heads=list(heads))
        return OnnxEncoder(OnnxBackend(folder, m.threads)), info
    if m.compile:
        return CompiledEncoder(model, device), info
    return TorchEncoder(model), info


class Encoding:
    """Resizes and encodes images with the chosen encoder; ``fold`` (the fast path) adds the heads' folded maps."""

    def __init__(
        self, model: DensityField, device: torch.device, input_size: tuple[int, int], encoder: Encoder, fold: bool
    ):
        self.model, self.device, self.input_size = model, device, input_size
        self.encoder, self.fold = encoder, fold
        self._intrinsics: tuple[tuple, np.ndarray, torch.Tensor] | None = None

    def intrinsics(self, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, torch.Tensor]:
        """Normalised intrinsics as an array and a device tensor; the same objects while K and the size stay."""
        key = (np.asarray(K, np.float64).tobytes(), width, height)
        if self._intrinsics is None or self._intrinsics[0] != key:
            Kn = normalise_intrinsics(K, width, height)
            self._intrinsics = (key, Kn, torch.as_tensor(Kn, dtype=torch.float32, device=self.device))
        return self._intrinsics[1], self._intrinsics[2]

    def prepare(self, image: np.ndarray, K: np.ndarray) -> Prepared:
        """Network-size RGB, its [0, 1] tensor (1, 3, H, W) and normalised intrinsics of an image."""
        H, W = self.input_size
        resized = cv2.resize(image, (W, H), interpolation=cv2.INTER_LINEAR)
        # a plain upload: a pinned staging buffer measured 4 ms slower per frame on an H100 (kdbts bench)
        image01 = torch.from_numpy(resized).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        return Prepared(resized, image01, self.intrinsics(K, image.shape[1], image.shape[0])[1])

    def encode(self, frame: Frame, heads: Sequence[str], prepared: Prepared | None = None) -> EncodedFrame:
        """The frame's encoding: features, intrinsics, pose and (``fold``) the folded maps of ``heads``."""
        if prepared is None:
            assert frame.K is not None, "a frame is encoded with its intrinsics"
            prepared = self.prepare(frame.image, frame.K)
        features, planes = self.encoder(prepared.image01)
        entry = EncodedFrame(frame.stamp_ns, features, prepared.Kn, frame.T_fixed_cam, planes, frame.frame_id)
        if self.fold:
            for h in heads:
                folded.kept_fold(self.model, features, entry.planes, h)
        return entry
