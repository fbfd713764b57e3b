"""One loaded network and its stateless stages: encode an image, query the field, render depth.

:class:`Stages` picks the device, builds the model (:mod:`kdbts_ros.core.loading`) and chooses
the strategies once: the encoder (torch, ``torch.compile`` or onnxruntime:
:func:`encoding.choose_encoder`) and the field query (fast or reference path:
:func:`field.choose_field`), the latter again when ``model.fast`` changes. It keeps nothing
from one frame to the next: the window, the head choice and the grid budget belong to the
runner (:mod:`kdbts_ros.runtime`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.encoding import Encoding, choose_encoder
from kdbts_ros.core.field import FieldQuery, choose_field
from kdbts_ros.core.lens import CanonicalCamera, LensError
from kdbts_ros.core.loading import OFFICIAL_INPUT_SIZE, build_model, checkpoint_camera, pick_device
from kdbts_ros.core.model.network import DensityField
from kdbts_ros.core.settings import ConfigError


def heads_for_mode(model: DensityField, cfg: PipelineConfig) -> list[str]:
    """Heads the head mode (and the depth image's head, ``render.depth_head``) may query with these weights (their
    folded maps are made when a frame is encoded)."""
    wanted = {cfg.mode} | ({"sv"} if cfg.render.depth_head == "sv" else set())
    return [h for h in ("sv", "mv") if h in model.available_heads and (wanted & {h, "auto"})]


def mode_problem(model: DensityField, mode: str) -> str | None:
    """Why the weights cannot serve a head mode, or None."""
    if mode == "mv" and "mv" not in model.available_heads:
        return (
            f"mode 'mv' needs a multi-view head, but the weights have only {model.available_heads}; "
            "use mode 'sv' or 'auto'"
        )
    return None


class Stages:
    """The network on its device with the chosen encoder and field-query strategies (``cfg`` is read live)."""

    def __init__(self, cfg: PipelineConfig, model: DensityField | None = None):
        self.cfg = cfg
        onnx_auto = cfg.model.backend == "onnxruntime" and cfg.model.device == "auto"
        self.device = torch.device("cpu") if onnx_auto else pick_device(cfg.model.device)  # onnxruntime: CPU
        if model is None:
            model, self.model_info = build_model(cfg)
        else:
            self.model_info = {"weights": "given"}
        self.model = model.to(self.device).eval()
        self.canonical = self._canonical()
        problem = mode_problem(self.model, cfg.mode)
        if problem:
            raise ConfigError(f"{self.model_info.get('weights')}: {problem}")
        if cfg.model.threads:
            torch.set_num_threads(cfg.model.threads)
        encoder, self.backend_info = choose_encoder(
            cfg,
            self.model,
            self.device,
            self.input_size,
            heads_for_mode(self.model, cfg),
            checkpoint=str(self.model_info.get("weights", "")),
        )
        self.encoding = Encoding(self.model, self.device, self.canonical, encoder, fold=cfg.model.fast)
        self.field: FieldQuery = choose_field(cfg, self.model, self.device, self.input_size)

    def choose_path(self) -> None:
        """Follow a run-time change of ``model.fast``: the field-query strategy, and folding at encode time."""
        if self.encoding.fold != self.cfg.model.fast:
            self.encoding.fold = self.cfg.model.fast
            self.field = choose_field(self.cfg, self.model, self.device, self.input_size)

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input (height, width): configured, else the checkpoint's training size."""
        m, info = self.cfg.model, self.model_info
        return (
            m.image_height or int(info.get("image_height", OFFICIAL_INPUT_SIZE[0])),
            m.image_width or int(info.get("image_width", OFFICIAL_INPUT_SIZE[1])),
        )

    def _canonical(self) -> CanonicalCamera:
        """The camera the network sees every frame through: the checkpoint's at the input size
        (:func:`~kdbts_ros.core.loading.checkpoint_camera`; one that states none is KITTI-360's, the model info
        says so).
        """
        try:
            camera = checkpoint_camera(self.model_info, self.input_size)
        except LensError as exc:
            raise ConfigError(f"{self.model_info.get('weights')}: {exc}") from exc
        if self.model_info.get("camera") is None:
            self.model_info["camera"] = "KITTI-360 (assumed: the checkpoint states no camera)"
        return camera

    @contextlib.contextmanager
    def precision(self) -> Iterator[None]:
        """Inference mode at the configured dtype (autocast: weights stay fp32, matmuls and convs run in dtype)."""
        dtype = getattr(torch, self.cfg.model.dtype)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            yield
