"""The exported ONNX graphs under onnxruntime against PyTorch's fast path: densities, occupancy, metadata."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
import torch

from kdbts_ros.core import geometry
from kdbts_ros.core.config import GridConfig
from kdbts_ros.core.grids import GridSpec
from kdbts_ros.core.lens import normalise_intrinsics
from kdbts_ros.core.loading import EMBEDDED_CHECKPOINT
from kdbts_ros.core.model import folded
from kdbts_ros.core.model.checkpoint import load_checkpoint, random_model
from kdbts_ros.core.model.export import ENCODER, export_onnx, load_metadata, query_file
from kdbts_ros.core.model.network import Architecture
from kdbts_ros.core.model.onnx_backend import PROVIDERS, OnnxBackend, session_options
from kdbts_ros.data.sequences import synthetic_sample

TOL = 1e-4


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference, relative where the reference exceeds 1 in magnitude."""
    return float(((a - b).abs() / b.abs().clamp_min(1.0)).max())


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    model, info = load_checkpoint(EMBEDDED_CHECKPOINT)
    model.eval()
    size = (int(info["image_height"]), int(info["image_width"]))
    out = tmp_path_factory.mktemp("onnx_embedded")
    meta = export_onnx(model, out, size, checkpoint=EMBEDDED_CHECKPOINT.name)
    return model, size, out, meta


@pytest.fixture(scope="module")
def street():
    """Four procedural frames driving forward, their intrinsics and poses."""
    return synthetic_sample(4)


def _inputs(seq, size):
    H, W = size
    h0, w0 = seq.images[0].shape[:2]
    images = [
        torch.from_numpy(cv2.resize(im, (W, H), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1)[None].float() / 255.0
        for im in seq.images
    ]
    Kn = torch.as_tensor(normalise_intrinsics(seq.K, w0, h0), dtype=torch.float32)
    return images, Kn


def _query_graph(
    folder, head: str, points: torch.Tensor, planes: list[torch.Tensor], Kn: torch.Tensor, w2c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exported query graph of ``head`` under onnxruntime: softplus density (N,) and invalid mask (N, V).

    Arguments as :func:`folded.folded_density` (less the model); the node queries with torch, the
    graph is for deployment (``kdbts export``).
    """
    import onnxruntime as ort

    V = 1 if head == "sv" else len(planes)
    session = ort.InferenceSession(str(folder / query_file(head)), session_options(1), providers=list(PROVIDERS))
    density, invalid = session.run(
        None,
        {
            "points": points.float().numpy(),
            "planes": torch.stack([p.float() for p in planes[:V]]).numpy(),
            "Kn": Kn[:V].float().contiguous().numpy(),
            "w2c": w2c[:V].float().contiguous().numpy(),
        },
    )
    return torch.from_numpy(density), torch.from_numpy(invalid)


def _grid_points() -> torch.Tensor:
    return torch.as_tensor(GridSpec.from_config(GridConfig()).centres_cam().reshape(-1, 3).copy(), dtype=torch.float32)


def test_metadata_states_the_models_values(embedded):
    model, size, out, meta = embedded
    assert meta == load_metadata(out)
    assert (meta["input_size"]["height"], meta["input_size"]["width"]) == size == (96, 320)
    assert meta["z_near"] == model.arch.z_near and meta["z_far"] == model.arch.z_far
    assert meta["grey_input"] is model.arch.grey_input is True
    assert meta["heads"] == model.available_heads == ["sv", "mv"]
    assert meta["hidden"] == {"sv": model.arch.sv_hidden, "mv": model.arch.mv_hidden}
    assert meta["feature_dim"] == model.arch.feature_dim
    assert meta["normalisation"]["inside_graph"] is True
    assert (meta["normalisation"]["mean"], meta["normalisation"]["std"]) == (0.45, 0.225)
    assert "normalised" in meta["intrinsics"] and meta["checkpoint"] == "kdbts_real.safetensors"
    assert meta["torch_version"] == torch.__version__
    for name in meta["files"].values():
        graph = onnx.load(str(out / name))
        onnx.checker.check_model(graph)
        assert {o.domain: o.version for o in graph.opset_import}[""] == meta["opset"] == 17
    enc = onnx.load(str(out / meta["files"][ENCODER]))
    dims = [d.dim_value for d in enc.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, *size]
    assert [o.name for o in enc.graph.output] == meta["encoder_outputs"]
    # the dynamic axes are named, not fixed
    q = onnx.load(str(out / query_file("mv")))
    assert q.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert q.graph.input[1].type.tensor_type.shape.dim[0].dim_param == "V"


def test_encoder_graph_matches_torch_on_real_like_frames(embedded, street):
    model, size, out, _ = embedded
    backend = OnnxBackend(out, threads=1)
    images, _ = _inputs(street, size)
    with torch.no_grad():
        for image in images[:2]:
            features, planes = backend.encode(image)
            ref = model.encode(image)[0]
            assert _close(features, ref) <= TOL
            for head in ("sv", "mv"):
                assert _close(planes[head], folded.fold_features(model, ref, head)) <= TOL


@pytest.mark.parametrize("head,views", [("sv", 1), ("mv", 1), ("mv", 2), ("mv", 4)])
def test_exported_graphs_keep_grid_density_and_occupancy(embedded, street, head, views):
    """Encoder and query graphs end to end against torch: density within 1e-4, occupancy identical."""
    model, size, out, _ = embedded
    backend = OnnxBackend(out, threads=1)
    images, Kn = _inputs(street, size)
    # the newest frame queries, the earlier ones are the other views
    order = list(range(views - 1, -1, -1))
    T = street.T_fixed_cam
    w2c = torch.as_tensor(np.stack([geometry.invert(T[i]) @ T[order[0]] for i in order]), dtype=torch.float32)
    KnV = Kn.expand(views, 3, 3).clone()
    pts = _grid_points()
    with torch.no_grad():
        ref_planes = [folded.fold_features(model, model.encode(images[i])[0], head) for i in order]
        ref, ref_invalid = folded.folded_density(model, pts, ref_planes, KnV, w2c, head)
        ort_planes = [backend.encode(images[i])[1][head] for i in order]
        got, invalid = _query_graph(out, head, pts, ort_planes, KnV, w2c)
    assert got.shape == ref.shape and torch.equal(invalid, ref_invalid)
    seen = ~ref_invalid[:, 0]
    assert _close(got[seen], ref[seen]) <= TOL
    occupied = GridConfig().occupied_density
    assert torch.equal(got[seen] > occupied, ref[seen] > occupied)
    assert (ref[seen] > occupied).any() and (ref[seen] <= occupied).any()  # a grid with both


def test_query_graph_takes_any_number_of_points_and_views(embedded):
    model, size, out, _ = embedded
    g = torch.Generator().manual_seed(0)
    for V, N in ((1, 1), (3, 7), (5, 1000)):
        planes = [torch.randn(model.arch.mv_hidden, *size, generator=g) for _ in range(V)]
        Kn = torch.tensor([[1.2, 0, 0.05], [0, 3.9, 0.02], [0, 0, 1]]).expand(V, 3, 3).clone()
        w2c = torch.eye(4).repeat(V, 1, 1)
        w2c[1:, :3, 3] = torch.randn(V - 1, 3, generator=g)
        pts = torch.rand(N, 3, generator=g) * torch.tensor([20.0, 4.0, 40.0]) + torch.tensor([-10.0, -2.0, -2.0])
        with torch.no_grad():
            ref, ref_invalid = folded.folded_density(model, pts, planes, Kn, w2c, "mv")
        got, invalid = _query_graph(out, "mv", pts, planes, Kn, w2c)
        assert torch.equal(invalid, ref_invalid)  # including points behind the camera
        assert _close(got, ref) <= TOL


def test_random_colour_network_exports_and_matches(tmp_path):
    """A colour-input network of other widths at another size: the graphs follow the architecture."""
    arch = Architecture(backbone="resnet18_half", feature_dim=16, sv_hidden=24, mv_hidden=40, mv_feature_dim=8)
    model = random_model(arch, 3).eval()
    meta = export_onnx(model, tmp_path, (64, 128), heads=["sv"], opset=17)
    assert meta["heads"] == ["sv"] and sorted(meta["files"]) == ["encoder", "query_sv"]
    assert meta["grey_input"] is False and meta["hidden"] == {"sv": 24}
    backend = OnnxBackend(tmp_path, threads=1)
    image = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(1))
    pts = torch.rand(4000, 3) * torch.tensor([18.0, 2.0, 20.0]) + torch.tensor([-9.0, -1.0, 3.0])
    Kn = torch.tensor([[[1.1, 0, 0.0], [0, 3.6, 0.1], [0, 0, 1]]])
    with torch.no_grad():
        features = model.encode(image)[0]
        ref = folded.folded_density(
            model, pts, [folded.fold_features(model, features, "sv")], Kn, torch.eye(4)[None], "sv"
        )[0]
    got_features, planes = backend.encode(image)
    assert _close(got_features, features) <= TOL
    got = _query_graph(tmp_path, "sv", pts, [planes["sv"]], Kn, torch.eye(4)[None])[0]
    assert _close(got, ref) <= TOL
    assert not (tmp_path / query_file("mv")).exists()  # only the exported heads have a query graph
    with pytest.raises(ValueError, match="head 'bogus'"):
        export_onnx(model, tmp_path / "x", (64, 128), heads=["bogus"])


def test_export_command_writes_the_graphs_and_metadata(tmp_path, capsys):
    import argparse

    from kdbts_ros.commands import export as export_command

    parser = argparse.ArgumentParser()
    export_command.add_arguments(parser)
    args = parser.parse_args(
        ["--checkpoint", "random", "--out", str(tmp_path), "--heads", "sv", "--height", "64", "--width", "128"]
    )
    assert export_command.run(args) == 0
    meta = load_metadata(tmp_path)
    assert (meta["input_size"]["height"], meta["input_size"]["width"]) == (64, 128)
    assert meta["heads"] == ["sv"] and meta["checkpoint"] == "random (seed 0)"
    printed = capsys.readouterr().out.split()
    assert all((tmp_path / name).is_file() for name in meta["files"].values())
    assert str(tmp_path / "export.json") in printed


def test_int8_encoder_feeds_the_same_query_graphs(tmp_path):
    from kdbts_ros.core.model.quantize import INT8_ENCODER, image_input, quantize_encoder

    model = random_model(Architecture(backbone="resnet18_half", feature_dim=16), 5).eval()
    export_onnx(model, tmp_path, (64, 128), heads=["sv"])
    frames = synthetic_sample(3, 256, 96).images
    path = quantize_encoder(tmp_path, frames[:2])
    assert path == tmp_path / INT8_ENCODER and not list(tmp_path.glob(".*"))
    fp32, int8 = OnnxBackend(tmp_path, threads=1), OnnxBackend(tmp_path, threads=1, encoder_file=INT8_ENCODER)
    image = torch.from_numpy(image_input(frames[2], (64, 128)))
    (fa, pa), (fb, pb) = fp32.encode(image), int8.encode(image)
    assert fb.shape == fa.shape and pb["sv"].shape == pa["sv"].shape
    assert float((fb - fa).abs().mean() / fa.abs().mean()) < 0.2  # quantised, not equal
