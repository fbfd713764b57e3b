"""The encode stage: an image seen through the network's canonical camera, and its encoding.

Every image is resampled into the canonical camera (:mod:`kdbts_ros.core.lens`) through its own
lens, with maps made once per lens and kept while the lens stays (a camera_info change makes new
ones); its pixels the camera does not see are marked invalid. Then the features (and folded head
maps) are computed.

How the features are made is a strategy chosen once at start-up (:func:`choose_encoder`):
torch's encoder, the same compiled with ``torch.compile`` where that pays (``model.compile``), or the exported
graph run by onnxruntime (``model.backend onnxruntime``), which also gives the folded maps of
the heads it was exported with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.frames import EncodedFrame, Frame
from kdbts_ros.core.lens import CanonicalCamera, Lens, Resampler, resampler
from kdbts_ros.core.model import folded
from kdbts_ros.core.model.compiled import Compiled
from kdbts_ros.core.model.network import DensityField
from kdbts_ros.core.model.onnx_backend import OnnxBackend, cached_export
from kdbts_ros.core.settings import ConfigError


class Prepared(NamedTuple):
    """An image in the canonical camera: RGB (H, W, 3), its [0, 1] tensor (1, 3, H, W), normalised intrinsics
    and the pixels the image's camera sees ((H, W) bool tensor; None when it sees them all).
    """

    resized: np.ndarray
    image01: torch.Tensor
    Kn: torch.Tensor
    valid: torch.Tensor | None


class Encoder(Protocol):
    """Features (C, H, W) of an image (1, 3, H, W) in [0, 1], with the folded maps {head: map} it makes too."""

    def __call__(self, image01: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def describe(self) -> str:
        """What encodes the frames, in a few words (the node's diagnostics, the benchmark's report)."""
        ...


class TorchEncoder:
    """The model's own encoder."""

    def __init__(self, model: DensityField):
        self.model = model

    def describe(self) -> str:
        return "torch"

    def __call__(self, image01: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.model.encode(image01)[0], {}


class CompiledEncoder:
    """The model's encoder through ``torch.compile`` for its fixed input size, where it is worth the build.

    The first frame is encoded by torch's encoder with its arithmetic counted (:attr:`gflop`); when
    that reaches ``min_gflop`` the compiled encoder is built at once and runs from then on,
    otherwise torch's encoder goes on (:attr:`compiled` says which). On CUDA with CUDA graphs (far
    fewer kernel launches); on a CPU with the weights frozen into the graph: batch norms folded into
    the convolutions and the weights packed once for oneDNN, with the ReLUs, ELUs and adds fused
    around them. Frozen weights are why a model is never trained through this encoder. When the
    build fails, :attr:`problem` says why (the node counts ``not_compiled``) and torch's encoder runs.
    """

    def __init__(self, model: DensityField, device: torch.device, min_gflop: float):
        self._torch = TorchEncoder(model)
        self.min_gflop = min_gflop
        self.gflop: float | None = None  # counted on the first frame
        self._cuda_graphs = device.type == "cuda"
        how = {"mode": "reduce-overhead"} if self._cuda_graphs else {"options": {"freezing": True}}
        self._encode = Compiled(model.encode, dynamic=False, **how)

    @property
    def problem(self) -> str | None:
        """Why the compiled encoder could not be built, or None."""
        return self._encode.problem

    @property
    def compiled(self) -> bool:
        """Whether frames go through the compiled encoder (False before the first frame)."""
        return self.gflop is not None and self.gflop >= self.min_gflop and self.problem is None

    def describe(self) -> str:
        if self.gflop is None:
            return "torch.compile where it pays: decided at the first frame"
        if self.compiled:
            return f"compiled ({self.gflop:.1f} GFLOP a frame)"
        if self.problem is not None:
            return f"torch (the build failed: {self.problem})"
        return f"torch ({self.gflop:.1f} GFLOP a frame, below model.compile_min_gflop {self.min_gflop:g})"

    def __call__(self, image01: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.gflop is None:
            with FlopCounterMode(display=False) as counter:
                out = self._torch(image01)
            self.gflop = counter.get_total_flops() / 1e9
            if not self.compiled:
                return out
        elif not self.compiled:
            return self._torch(image01)
        encoded = self._encode(image01)
        if encoded is None:  # the build failed (problem says why)
            return self._torch(image01)
        # a CUDA graph's output is overwritten by its next replay, and the window keeps features
        return (encoded[0].clone() if self._cuda_graphs else encoded[0]), {}


class OnnxEncoder:
    """The exported encoder in onnxruntime: features and the exported heads' folded maps in one run."""

    def __init__(self, backend: OnnxBackend):
        self.backend = backend

    def describe(self) -> str:
        return "onnxruntime"

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
        folder, export = cached_export(model, input_size, heads, checkpoint=checkpoint)
        info.update(export, heads=list(heads))
        return OnnxEncoder(OnnxBackend(folder, m.threads)), info
    if m.compile:
        return CompiledEncoder(model, device, m.compile_min_gflop), info
    return TorchEncoder(model), info


# lenses whose maps are kept: a rig's cameras, and room for a camera_info that changes back and forth
KEPT_LENSES = 8


class Encoding:
    """Resamples images into the canonical camera and encodes them; ``fold`` (the fast path) adds the heads'
    folded maps.
    """

    def __init__(
        self, model: DensityField, device: torch.device, canonical: CanonicalCamera, encoder: Encoder, fold: bool
    ):
        self.model, self.device, self.canonical = model, device, canonical
        self.encoder, self.fold = encoder, fold
        self.Kn = torch.as_tensor(canonical.Kn, dtype=torch.float32, device=device)
        self._lens = canonical.lens()
        self._maps: dict[Lens, tuple[Resampler, torch.Tensor | None]] = {}

    @property
    def input_size(self) -> tuple[int, int]:
        """The network input (height, width)."""
        return self.canonical.height, self.canonical.width

    def resampling(self, lens: Lens) -> tuple[Resampler, torch.Tensor | None]:
        """The maps into the canonical camera of an image of ``lens``, and its valid pixels on the device."""
        kept = self._maps.pop(lens, None)  # re-inserted: the dict keeps the most recently used last
        if kept is None:
            maps = resampler(lens, self._lens)
            valid = None if maps.valid.all() else torch.as_tensor(maps.valid, device=self.device)
            kept = (maps, valid)
            if len(self._maps) >= KEPT_LENSES:
                self._maps.pop(next(iter(self._maps)))
        self._maps[lens] = kept
        return kept

    def prepare(self, image: np.ndarray, lens: Lens) -> Prepared:
        """The image in the canonical camera: RGB, its [0, 1] tensor (1, 3, H, W), intrinsics and valid pixels."""
        maps, valid = self.resampling(lens)
        resized = maps(image)
        # a plain upload: a pinned staging buffer measured 4 ms slower per frame on an H100 (kdbts bench)
        image01 = torch.from_numpy(resized).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        return Prepared(resized, image01, self.Kn, valid)

    def encode(self, frame: Frame, heads: Sequence[str], prepared: Prepared | None = None) -> EncodedFrame:
        """The frame's encoding: features, intrinsics, pose, valid pixels, (``fold``) the folded maps of ``heads``."""
        if prepared is None:
            prepared = self.prepare(frame.image, frame.lens())
        features, planes = self.encoder(prepared.image01)
        entry = EncodedFrame(
            frame.stamp_ns, features, prepared.Kn, frame.T_fixed_cam, planes, frame.frame_id, prepared.valid
        )
        if self.fold:
            for h in heads:
                folded.kept_fold(self.model, features, entry.planes, h)
        return entry
