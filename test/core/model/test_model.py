"""The network against the official layout, shapes and analytic cases."""

import math
import pickle

import numpy as np
import pytest
import torch
from conftest import SMALL_ARCH, slab_model

from kdbts_ros.core.model import checkpoint as ckpt
from kdbts_ros.core.model.code import PositionalEncoding, z_code
from kdbts_ros.core.model.heads import MultiViewHead
from kdbts_ros.core.model.network import Architecture, DensityField, Views
from kdbts_ros.core.model.render import along_rays, composite, render_depth, sample_depths
from kdbts_ros.core.model.resnet import ResNet


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_official_model():
    net = DensityField(Architecture())
    assert _count(net.encoder.encoder) == 25_557_032
    assert _count(net.encoder.decoder) == 9_328_000
    assert _count(net.heads["singleviewhead"]) == 6_721
    assert _count(net.heads["multiviewhead3"]) == 15_794
    keys = net.state_dict().keys()
    for k in (
        "encoder.encoder.encoder.layer4.2.bn3.running_var",
        "encoder.encoder.encoder.fc.weight",
        "encoder.decoder.decoder.13.conv.weight",
        "encoder.decoder.decoder.9.conv.conv.bias",
        "code_xyz._freqs",
        "heads.multiviewhead3.mlp2.lin_out.bias",
        "heads.singleviewhead.lin_in.weight",
    ):
        assert k in keys
    assert net.state_dict()["encoder.decoder.decoder.1.conv.conv.weight"].shape == (256, 1280, 3, 3)


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_basic_block_resnets_have_torchvision_sizes(name):
    assert _count(ResNet(name)) == {"resnet18": 11_689_512, "resnet34": 21_797_672}[name]


def test_feature_map_is_full_resolution():
    net = DensityField(SMALL_ARCH).eval()
    with torch.no_grad():
        f = net.encode(torch.rand(2, 3, 64, 192))
    assert f.shape == (2, 64, 64, 192)


def test_positional_code_layout_and_reference_value():
    pe = PositionalEncoding()
    x = torch.tensor([[0.3, -0.7, 0.1]])
    out = pe(x)[0]
    assert out.shape == (39,)
    expected = [*x[0]]
    for k in range(6):
        f = 1.5 * 2**k
        expected += [math.sin(f * v) for v in x[0]] + [math.cos(f * v) for v in x[0]]
    np.testing.assert_allclose(out.numpy(), np.array(expected, dtype=np.float32), atol=1e-6)
    # the point (0, 0, 10 m) with the KITTI-360 K' has code (cx', cy', -0.4545)
    assert float(z_code(torch.tensor(10.0), 3.0, 80.0)) == pytest.approx(-0.4545, abs=1e-4)


def test_mv_head_one_valid_view_is_its_single_view_reduction_and_order_invariant():
    torch.manual_seed(0)
    head = MultiViewHead(103, 128, 16)
    x = torch.randn(50, 4, 103)
    only_first = torch.tensor([False, True, True, True]).expand(50, 4)
    reduced = head.mlp2(head.mlp(x[:, 0])[:, 1:])
    torch.testing.assert_close(head(x, only_first), reduced)
    some = torch.rand(50, 4) > 0.5
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(head(x, some), head(x[:, perm], some[:, perm]))
    # no valid view: uniform weights over all views
    all_invalid = torch.ones(50, 4, dtype=torch.bool)
    out = head.mlp(x)
    torch.testing.assert_close(head(x, all_invalid), head.mlp2(out[..., 1:].mean(1)))


def test_mv_query_with_one_view_equals_sv_inputs():
    net = DensityField(SMALL_ARCH).eval()
    feats = torch.randn(1, 2, 64, 16, 48)
    Kn = torch.tensor([[1.16, 0, 0.0], [0, 3.85, 0.0], [0, 0, 1]]).expand(1, 2, 3, 3)
    w2c = torch.eye(4).expand(1, 2, 4, 4).clone()
    w2c[0, 1, 0, 3] = 0.5
    views = Views(feats, Kn, w2c)
    pts = torch.tensor([[[0.0, 0.5, 8.0], [1.0, 0.2, 15.0]]])
    x, _invalid = net.point_inputs(pts, views)
    x1, _ = net.point_inputs(pts, views.subset([1]))
    torch.testing.assert_close(x[:, :, 1], x1[:, :, 0])
    # the shifted camera sees the point 0.5 m further right: x_ndc grows by fx' * 0.5 / z
    assert float(x[0, 0, 1, 64] - x[0, 0, 0, 64]) == pytest.approx(1.16 * 0.5 / 8.0, rel=1e-5)


def test_composite_of_a_hard_slab_is_its_first_sample():
    t = sample_depths(3, 64, 3.0, 80.0)
    sigma = torch.where(t > 10.0, 1e6, 0.0)
    weights, depth = composite(sigma, t)
    first = t[torch.arange(3), (t <= 10.0).sum(1)]
    torch.testing.assert_close(depth, first)
    torch.testing.assert_close(weights.sum(1), torch.ones(3))
    # empty space: the capped last sample takes all weight
    _, far = composite(torch.zeros_like(t), t)
    torch.testing.assert_close(far, t[:, -1])


def test_inverse_depth_sampling_is_linear_in_disparity():
    t = sample_depths(2, 8, 3.0, 80.0)
    step = (1 / 3 - 1 / 80) / 8
    np.testing.assert_allclose(np.diff(1 / t.numpy(), axis=1), -step, rtol=1e-5)
    g = torch.Generator().manual_seed(5)
    a, b = sample_depths(2, 8, 3.0, 80.0, g), sample_depths(2, 8, 3.0, 80.0, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert a.min() >= 3.0 and a.max() <= 80.0


def test_slab_network_renders_the_slab_depth():
    net = slab_model(10.0).eval()
    feats = torch.randn(1, 1, 64, 8, 24)
    views = Views(feats, torch.tensor([[[[1.1, 0, 0], [0, 3.8, 0], [0, 0, 1.0]]]]), torch.eye(4)[None, None])
    dirs = torch.tensor([[0.0, 0.0, 1.0], [0.3, 0.1, 1.0]])
    with torch.no_grad():
        d = render_depth(along_rays(lambda p: net.density(p[None], views, "sv")[0][0]), dirs, 64, 3.0, 80.0, 4096).depth
    spacing = 10.0**2 * (1 / 3 - 1 / 80) / 64  # sample spacing in metres near 10 m
    assert torch.all(d >= 10.0) and torch.all(d <= 10.0 + spacing + 0.1)


def test_checkpoint_round_trip_and_refusals(tmp_path):
    net = slab_model(12.0)
    path = tmp_path / "slab.safetensors"
    ckpt.save_checkpoint(path, net, {"note": "slab"})
    loaded, info = ckpt.load_checkpoint(path)
    assert info == {"note": "slab"} and loaded.arch == net.arch
    for k, v in net.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    # a pickle (what torch.save writes) is refused without being unpickled
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"model": {}}))
    with pytest.raises(ckpt.CheckpointError, match="not a readable safetensors"):
        ckpt.load_checkpoint(evil)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_checkpoint(truncated)


def test_colour_sampling_reads_the_pixel_a_point_projects_to():
    net = DensityField(SMALL_ARCH)
    H, W = 6, 10
    img = torch.rand(1, 2, 3, H, W)
    Kn = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1]]]).expand(1, 2, 3, 3)
    w2c = torch.eye(4).expand(1, 2, 4, 4).clone()
    w2c[0, 1, 0, 3] = 100.0  # the second frame looks elsewhere: every point is outside it
    # pixel (u=7, v=2) centre in align_corners=False coordinates, at depth 5
    x, y = (2 * 7 + 1) / W - 1, (2 * 2 + 1) / H - 1
    rgb, invalid = net.sample_images(torch.tensor([[[x * 5, y * 5, 5.0]]]), img, Kn, w2c)
    torch.testing.assert_close(rgb[0, 0, 0], img[0, 0, :, 2, 7])
    assert invalid[0, 0].tolist() == [False, True]


def test_reduced_precision_keeps_occupancy():
    from conftest import small_config

    from kdbts_ros.core.frames import Frame
    from kdbts_ros.runtime.runner import FrameRunner

    img = (np.random.default_rng(0).random((64, 192, 3)) * 255).astype(np.uint8)
    K = np.array([[100.0, 0, 96], [0, 100, 32], [0, 0, 1]])
    out = {}
    for dtype in ("float32", "bfloat16"):
        cfg = small_config()
        cfg.model.dtype = dtype
        out[dtype] = FrameRunner(cfg).process(Frame(img, K, 1, "c", np.eye(4)))
    a, b = out["float32"].density, out["bfloat16"].density
    seen = ~out["float32"].unseen
    assert np.array_equal(seen, ~out["bfloat16"].unseen)
    assert np.mean((a[seen] > 0.5) == (b[seen] > 0.5)) >= 0.99
    assert out["bfloat16"].depth.dtype == np.float32
