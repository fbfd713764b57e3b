"""ONNX export of the fast inference path: an encoder graph and one query graph per head.

``encoder.onnx``: image (1, 3, H, W) RGB in [0, 1] -> ``features`` (1, C, H, W) and, per head,
``planes_<head>`` (1, hidden, H, W), the head's folded first layer (:func:`folded.fold_features`).
The normalisation ((x - 0.45) / 0.225) and, for grey-input networks, the luma conversion are
inside the graph.

``query_<head>.onnx``: points (N, 3) in the query camera, planes (V, hidden, H, W) of V views
(view 0 the query camera, w2c[0] = I), Kn (V, 3, 3) normalised intrinsics, w2c (V, 4, 4)
-> ``density`` (N,) softplus density in 1/m and ``invalid`` (N, V) (behind the camera or outside
the image; the grid marks cells unseen by view 0). N is dynamic; V is dynamic for 'mv'
and 1 for 'sv'. Sampling is ``grid_sample`` bilinear, border padding, align_corners=False
(ONNX GridSample, opset >= 16), as :mod:`folded` samples.

``export.json`` beside them: what a deployment needs (:func:`export_metadata`).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbts_ros.core.camera import Z_EPS
from kdbts_ros.core.model.code import z_code
from kdbts_ros.core.model.folded import first_mlp
from kdbts_ros.core.model.network import MV_HEAD, DensityField

ENCODER = "encoder"
METADATA = "export.json"
# the grey-input luma and (x - 0.45) / 0.225 happen inside the encoder graph
NORMALISATION = {
    "input": "RGB float32 in [0, 1], (1, 3, H, W): the frame resampled through its camera_info into the "
    "checkpoint's camera (export.json 'camera' when written by kdbts export; kdbts_ros.core.lens)",
    "inside_graph": True,
    "mean": 0.45,
    "std": 0.225,
    "formula": "(x - 0.45) / 0.225",
}
INTRINSICS = (
    "normalised: fx' = 2 fx / W0, fy' = 2 fy / H0, cx' = 2 cx / W0 - 1, cy' = 2 cy / H0 - 1 "
    "for pixel intrinsics of a W0 x H0 image (kdbts_ros.core.lens.normalise_intrinsics); "
    "image x right, y down, z forward; projected coordinates in [-1, 1] are inside the image"
)


def query_file(head: str) -> str:
    return f"query_{head}.onnx"


class EncoderGraph(nn.Module):
    """image01 (1, 3, H, W) -> features (1, C, H, W), then the folded maps (1, hidden, H, W) per head."""

    def __init__(self, model: DensityField, heads: Sequence[str]):
        super().__init__()
        self.model, self.heads = model, tuple(heads)

    def forward(self, image01: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.encode(image01)
        _, C, H, W = features.shape
        flat = features.reshape(C, H * W)
        outs = [features]
        for head in self.heads:
            lin = first_mlp(self.model, head).lin_in
            # the matmul of fold_features (not a 1x1 convolution), so the graph sums as the fast path does
            outs.append(torch.addmm(lin.bias[:, None], lin.weight[:, :C], flat).reshape(1, -1, H, W))
        return tuple(outs)


class QueryGraph(nn.Module):
    """points (N, 3), planes (V, hidden, H, W), Kn (V, 3, 3), w2c (V, 4, 4) -> density (N,), invalid (N, V).

    :func:`folded.folded_density` with the views batched (no Python loop over V), so V can be a
    dynamic axis.
    """

    def __init__(self, model: DensityField, head: str):
        super().__init__()
        self.model, self.head = model, head

    def forward(
        self, points: torch.Tensor, planes: torch.Tensor, Kn: torch.Tensor, w2c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model, mlp = self.model, first_mlp(self.model, self.head)
        V, N = planes.shape[0], points.shape[0]
        cam = torch.matmul(points[None], w2c[:, :3, :3].transpose(1, 2)) + w2c[:, None, :3, 3]  # (V, N, 3)
        uvz = torch.matmul(cam, Kn.transpose(1, 2))
        z = uvz[..., 2:3]
        xy = uvz[..., :2] / z.clamp_min(Z_EPS)
        invalid = (z[..., 0] <= Z_EPS) | (xy.abs() > 1).any(-1)  # (V, N)
        coords = torch.cat([xy, z_code(z, model.arch.z_near, model.arch.z_far)], -1)  # (V, N, 3)
        code = model.code_xyz(coords.reshape(-1, 3)).reshape(V, N, -1)  # (V, N, 39)
        sampled = F.grid_sample(planes, xy[:, None], mode="bilinear", padding_mode="border", align_corners=False)[
            :, :, 0
        ]  # (V, hidden, N)
        w_code = mlp.lin_in.weight[:, model.arch.feature_dim :]  # (hidden, 39)
        pre = sampled + torch.matmul(w_code, code.transpose(1, 2))
        out = torch.matmul(mlp.lin_out.weight, torch.relu(pre)) + mlp.lin_out.bias[:, None]  # (V, d_out, N)
        if self.head == "sv":
            logits = out[0, 0]
        else:
            conf = out[:, 0].masked_fill(invalid, torch.finfo(out.dtype).min)
            fused = (torch.softmax(conf, 0)[:, None] * out[:, 1:]).sum(0)  # (F, N)
            mlp2: Any = model.heads[MV_HEAD].mlp2  # a Module attribute: torch types it Tensor | Module
            h = torch.relu(torch.matmul(mlp2.lin_in.weight, fused) + mlp2.lin_in.bias[:, None])
            logits = (torch.matmul(mlp2.lin_out.weight, h) + mlp2.lin_out.bias[:, None])[0]
        return F.softplus(logits), invalid.transpose(0, 1)


def export_metadata(
    model: DensityField,
    input_size: tuple[int, int],
    heads: Sequence[str],
    opset: int,
    checkpoint: str,
    files: dict[str, str],
) -> dict:
    """The deployment record written beside the graphs."""
    H, W = input_size
    return {
        "format": "kdbts_ros/onnx/1",
        "checkpoint": checkpoint,
        "torch_version": torch.__version__,
        "opset": opset,
        "input_size": {"height": H, "width": W},
        "normalisation": NORMALISATION,
        "grey_input": bool(model.arch.grey_input),
        "intrinsics": INTRINSICS,
        "z_near": float(model.arch.z_near),
        "z_far": float(model.arch.z_far),
        "architecture": dataclasses.asdict(model.arch),
        "heads": list(heads),
        "hidden": {h: int(first_mlp(model, h).lin_in.out_features) for h in heads},
        "feature_dim": int(model.arch.feature_dim),
        "files": files,
        "encoder_outputs": ["features"] + [f"planes_{h}" for h in heads],
        "query_inputs": {
            "points": "(N, 3) float32, query camera frame (x right, y down, z forward), metres",
            "planes": "(V, hidden, H, W) float32: the encoder's planes_<head> of V views, view 0 the query camera",
            "Kn": "(V, 3, 3) float32 normalised intrinsics",
            "w2c": "(V, 4, 4) float32 query camera -> view camera; w2c[0] = identity",
        },
        "query_outputs": {
            "density": "(N,) float32 softplus density, 1/m",
            "invalid": "(N, V) bool: behind the view's camera or outside its image",
        },
        "dynamic_axes": {"sv": ["N"], "mv": ["N", "V"]},
        "sampling": "grid_sample bilinear, padding border, align_corners=False",
    }


def export_onnx(
    model: DensityField,
    out_dir: str | Path,
    input_size: tuple[int, int],
    heads: Sequence[str] | None = None,
    opset: int = 17,
    checkpoint: str = "",
) -> dict:
    """Write ``encoder.onnx``, ``query_<head>.onnx`` per head and ``export.json`` into ``out_dir``.

    Returns the metadata (with ``files`` naming the graphs relative to out_dir); each graph
    passes ``onnx.checker``.
    """
    import onnx

    heads = list(model.available_heads if heads is None else heads)
    for h in heads:
        if h not in ("sv", "mv") or h not in model.available_heads:
            raise ValueError(f"head {h!r}: not one of the model's heads {model.available_heads}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    H, W = input_size
    files = {ENCODER: f"{ENCODER}.onnx"}
    image = torch.rand(1, 3, H, W)
    with torch.no_grad():
        features = model.encode(image)
        _export(
            EncoderGraph(model, heads),
            (image,),
            out / files[ENCODER],
            ["image"],
            ["features"] + [f"planes_{h}" for h in heads],
            {},
            opset,
        )
        Hf, Wf = features.shape[-2:]
        for h in heads:
            V = 2 if h == "mv" else 1
            hidden = first_mlp(model, h).lin_in.out_features
            args = (
                torch.rand(5, 3) * 10,
                torch.rand(V, hidden, Hf, Wf),
                torch.eye(3).expand(V, 3, 3).clone(),
                torch.eye(4).expand(V, 4, 4).clone(),
            )
            dyn = {"points": {0: "N"}, "density": {0: "N"}, "invalid": {0: "N"}}
            if h == "mv":
                dyn.update({"planes": {0: "V"}, "Kn": {0: "V"}, "w2c": {0: "V"}, "invalid": {0: "N", 1: "V"}})
            files[f"query_{h}"] = query_file(h)
            _export(
                QueryGraph(model, h),
                args,
                out / files[f"query_{h}"],
                ["points", "planes", "Kn", "w2c"],
                ["density", "invalid"],
                dyn,
                opset,
            )
    for name in files.values():
        onnx.checker.check_model(str(out / name))
    meta = export_metadata(model, (H, W), heads, opset, checkpoint, files)
    (out / METADATA).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _export(
    module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic_axes: dict, opset: int
) -> None:
    # the TorchScript exporter: one call, no onnxscript dependency, GridSample since opset 16.
    # The wrapper must be in eval mode: the exporter restores the module's mode afterwards, and a
    # fresh wrapper's training mode would otherwise switch the wrapped network's batch norms to training
    module.eval()
    with warnings.catch_warnings():  # tracer notes on shape-derived constants and the exporter's deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic_axes or None,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def load_metadata(out_dir: str | Path) -> dict:
    """The ``export.json`` of an export folder."""
    return json.loads((Path(out_dir) / METADATA).read_text())
