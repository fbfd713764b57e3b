"""onnxruntime runner of the exported encoder (:mod:`export`), and the cache of exports it runs.

``encode(image01)`` gives what the torch encoder and :func:`folded.fold_features` make (features
(C, H, W) and each exported head's folded map (hidden, H, W)); the field is queried with torch
(:mod:`kdbts_ros.core.field`), the export's query graphs are for deployment. onnxruntime is
imported when a runner is made, so the torch backend never needs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kdbts_ros.core.model.export import ENCODER, METADATA, export_onnx, load_metadata
from kdbts_ros.core.model.network import DensityField
from kdbts_ros.core.model.registry import cache_dir

PROVIDERS = ("CPUExecutionProvider",)
EXPORT_VERSION = "kdbts_ros/onnx/1"  # part of the cache key: a changed graph layout gets new folders


def export_key(model: DensityField, input_size: tuple[int, int], heads: Sequence[str], opset: int = 17) -> str:
    """Identity of an export: a hash of the weights (every tensor's bytes), architecture, input size, heads,
    opset, graph layout and torch version (its exporter writes the graphs)."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "arch": dataclasses.asdict(model.arch),
                "size": list(input_size),
                "heads": list(heads),
                "opset": opset,
                "format": EXPORT_VERSION,
                "torch": torch.__version__,
            },
            sort_keys=True,
            default=str,
        ).encode()
    )
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def export_cache_root() -> Path:
    """Where cached exports live: the weights cache's ``onnx`` folder ($KDBTS_CACHE_DIR, else the XDG cache)."""
    return cache_dir() / "onnx"


def cached_export(
    model: DensityField,
    input_size: tuple[int, int],
    heads: Sequence[str],
    checkpoint: str = "",
    root: Path | None = None,
) -> tuple[Path, dict]:
    """The export folder of this model, size and heads: reused from the cache, else exported into it.

    Returns (folder, info: key, cached, export_s). The export is written to a temporary folder
    beside its final one and renamed into place, so a concurrent or interrupted export never
    leaves a half-written folder under the key. A cache that cannot be written falls back to a
    temporary folder removed at exit (the export then repeats at every start).
    """
    key = export_key(model, input_size, heads)
    root = export_cache_root() if root is None else Path(root)
    final = root / key
    if (final / METADATA).is_file():
        return final, {"key": key, "cached": True, "export_s": 0.0, "dir": str(final)}
    t0 = time.perf_counter()
    try:
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    except OSError:
        work = None
    if work is None:  # read-only cache: a throw-away folder
        tmp = tempfile.mkdtemp(prefix="kdbts_onnx_")
        import atexit

        atexit.register(shutil.rmtree, tmp, True)
        export_onnx(model, tmp, input_size, heads, checkpoint=checkpoint)
        return Path(tmp), {"key": key, "cached": False, "export_s": time.perf_counter() - t0, "dir": tmp}
    try:
        export_onnx(model, work, input_size, heads, checkpoint=checkpoint)
        try:
            os.replace(work, final)
        except OSError:  # another process put the same export there first
            if not (final / METADATA).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final, {"key": key, "cached": False, "export_s": time.perf_counter() - t0, "dir": str(final)}


def session_options(threads: int = 0):
    """onnxruntime session options: ``threads`` intra-op threads (0: onnxruntime's default, one per core)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


class OnnxBackend:
    """The encoder session of an export folder."""

    def __init__(
        self,
        export_dir: str | Path,
        threads: int = 0,
        providers: Sequence[str] = PROVIDERS,
        encoder_file: str | None = None,
    ):
        import onnxruntime as ort

        self.dir = Path(export_dir)
        self.meta = load_metadata(self.dir)
        self.heads: list[str] = list(self.meta["heads"])
        self.input_size = (int(self.meta["input_size"]["height"]), int(self.meta["input_size"]["width"]))
        # encoder_file: another encoder graph of the same export, e.g. its int8 quantisation
        self.encoder = ort.InferenceSession(
            str(self.dir / (encoder_file or self.meta["files"][ENCODER])),
            session_options(threads),
            providers=list(providers),
        )

    def encode(self, image01: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Features (C, H, W) and folded maps {head: (hidden, H, W)} of an image (1, 3, H, W) in [0, 1]."""
        H, W = self.input_size
        if tuple(image01.shape) != (1, 3, H, W):
            raise ValueError(f"the exported encoder takes (1, 3, {H}, {W}) images, not {tuple(image01.shape)}")
        outs = self.encoder.run(None, {"image": np.ascontiguousarray(image01.detach().cpu().float().numpy())})
        # the maps channels-last, as fold_features keeps them on a CPU (the fast path samples them a row per corner)
        planes = {
            h: torch.from_numpy(o[0].transpose(1, 2, 0).copy()).permute(2, 0, 1) for h, o in zip(self.heads, outs[1:])
        }
        return torch.from_numpy(outs[0][0]), planes
