"""onnxruntime runner of the exported graphs (:mod:`export`), with the call shapes of the fast path.

``encode(image01)`` gives what :meth:`Pipeline._encode_prepared` and :meth:`Pipeline._planes` make
with torch (features (C, H, W) and each head's folded map (hidden, H, W)); ``folded_density``
and ``ray_density`` take the arguments of :func:`folded.folded_density` and
:func:`folded.ray_density` (less the model) and return the same tensors. onnxruntime is
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

from kdbts_ros.core.model.export import ENCODER, METADATA, export_onnx, load_metadata, query_file
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
    """Sessions of an export folder: the encoder and one query graph per exported head."""

    def __init__(
        self,
        export_dir: str | Path,
        threads: int = 0,
        providers: Sequence[str] = PROVIDERS,
        encoder_file: str | None = None,
    ):
        import onnxruntime as ort

        self.dir = Path(export_dir)
        self._tmp: tempfile.TemporaryDirectory | None = None  # a temporary export, removed with the runner
        self.meta = load_metadata(self.dir)
        self.heads: list[str] = list(self.meta["heads"])
        self.input_size = (int(self.meta["input_size"]["height"]), int(self.meta["input_size"]["width"]))
        so = session_options(threads)
        providers = list(providers)
        # encoder_file: another encoder graph of the same export, e.g. its int8 quantisation
        self.encoder = ort.InferenceSession(
            str(self.dir / (encoder_file or self.meta["files"][ENCODER])), so, providers=providers
        )
        self.queries = {
            h: ort.InferenceSession(str(self.dir / query_file(h)), so, providers=providers) for h in self.heads
        }
        self._stacked: tuple[tuple[torch.Tensor, ...], np.ndarray] | None = None

    @classmethod
    def from_model(
        cls,
        model: DensityField,
        input_size: tuple[int, int],
        heads: Sequence[str] | None = None,
        threads: int = 0,
        export_dir: str | Path | None = None,
        checkpoint: str = "",
    ) -> OnnxBackend:
        """Export ``model`` (into ``export_dir``, else a temporary folder kept for the runner's life) and open it."""
        tmp = None
        if export_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="kdbts_onnx_")
            export_dir = tmp.name
        export_onnx(model, export_dir, input_size, heads, checkpoint=checkpoint)
        runner = cls(export_dir, threads)
        runner._tmp = tmp
        return runner

    def encode(self, image01: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Features (C, H, W) and folded maps {head: (hidden, H, W)} of an image (1, 3, H, W) in [0, 1]."""
        H, W = self.input_size
        if tuple(image01.shape) != (1, 3, H, W):
            raise ValueError(f"the exported encoder takes (1, 3, {H}, {W}) images, not {tuple(image01.shape)}")
        outs = self.encoder.run(None, {"image": np.ascontiguousarray(image01.detach().cpu().float().numpy())})
        return torch.from_numpy(outs[0][0]), {h: torch.from_numpy(o[0]) for h, o in zip(self.heads, outs[1:])}

    def _planes(self, planes: Sequence[torch.Tensor]) -> np.ndarray:
        """The views' maps stacked (V, hidden, H, W); the last stack is kept while the same maps come again."""
        key = tuple(planes)
        if (
            self._stacked is None
            or len(self._stacked[0]) != len(key)
            or any(a is not b for a, b in zip(self._stacked[0], key))
        ):
            # the key holds the tensors themselves, so their ids cannot be reused while cached
            self._stacked = (key, np.ascontiguousarray(torch.stack([p.float() for p in planes]).cpu().numpy()))
        return self._stacked[1]

    def folded_density(
        self, points: torch.Tensor, planes: Sequence[torch.Tensor], Kn: torch.Tensor, w2c: torch.Tensor, head: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Softplus density (N,) and invalid mask (N, V) of points (N, 3), as :func:`folded.folded_density`."""
        if head not in self.queries:
            raise ValueError(f"head {head!r} was not exported (exported: {self.heads})")
        V = 1 if head == "sv" else len(planes)
        stacked = self._planes(planes[:V])
        density, invalid = self.queries[head].run(
            None,
            {
                "points": np.ascontiguousarray(points.detach().cpu().float().numpy()),
                "planes": stacked,
                "Kn": np.ascontiguousarray(Kn[:V].detach().cpu().float().numpy()),
                "w2c": np.ascontiguousarray(w2c[:V].detach().cpu().float().numpy()),
            },
        )
        return torch.from_numpy(density), torch.from_numpy(invalid)

    def ray_density(
        self,
        dirs: torch.Tensor,
        t: torch.Tensor,
        planes: Sequence[torch.Tensor],
        Kn: torch.Tensor,
        w2c: torch.Tensor,
        head: str,
    ) -> torch.Tensor:
        """Softplus density (R, S) at depths t (R, S) along rays dirs (R, 3) from view 0's centre.

        Every sample is a point query (no per-ray sharing, unlike :func:`folded.ray_density`).
        """
        points = (dirs[:, None, :] * t[..., None]).reshape(-1, 3)
        return self.folded_density(points, planes, Kn, w2c, head)[0].view_as(t)
