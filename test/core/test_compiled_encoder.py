"""model.compile: the encoder through torch.compile where its arithmetic is worth the build, with torch's features;
a failed build falls back to torch's encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import NoCompiler, small_config

from kdbts_ros.core import encoding
from kdbts_ros.core.encoding import CompiledEncoder, TorchEncoder
from kdbts_ros.core.frames import Frame
from kdbts_ros.core.model.checkpoint import random_model
from kdbts_ros.core.model.network import Architecture
from kdbts_ros.runtime.runner import FrameRunner


def test_an_encoder_that_cannot_be_built_counts_not_compiled_and_the_node_keeps_its_outputs(monkeypatch):
    monkeypatch.setattr(encoding.torch, "compile", NoCompiler())
    NoCompiler.calls = 0
    K = np.array([[120.0, 0, 97], [0, 120, 33], [0, 0, 1]])
    img = np.random.default_rng(1).integers(0, 255, (64, 192, 3), dtype=np.uint8)
    outs, runners = {}, {}
    for compile_ in (False, True):
        settings = {"model.compile": compile_, "model.compile_min_gflop": 0.0, "render.fused": False}
        runner = FrameRunner(small_config(**settings))
        outs[compile_] = [runner.process(Frame(img, K, (i + 1) * 10**8, "cam", None)) for i in range(3)]
        runners[compile_] = runner
    encoder = runners[True].stages.encoding.encoder
    assert isinstance(encoder, CompiledEncoder) and not encoder.compiled
    assert NoCompiler.calls == 1  # tried once, not on every frame
    assert runners[True].faults["not_compiled"] == 3 and runners[False].faults["not_compiled"] == 0
    assert encoder.problem is not None and "CppCompileError" in encoder.problem
    assert encoder.describe().startswith("torch (the build failed: RuntimeError: InductorError: CppCompileError")
    assert runners[False].stages.encoding.encoder.describe() == "torch"
    for a, b in zip(outs[True], outs[False]):
        np.testing.assert_array_equal(a.depth, b.depth)
        np.testing.assert_array_equal(a.density, b.density)


def _conv_gflop(model: torch.nn.Module, image: torch.Tensor) -> float:
    """The encoder's convolution arithmetic, 2 x multiply-adds, counted from each convolution's output shape."""
    total = []

    def count(conv, _inputs, out):
        total.append(2 * out.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1])

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model.encode(image)
    for h in hooks:
        h.remove()
    return sum(total) / 1e9


def test_an_encoder_below_the_threshold_is_never_built_and_one_above_is_built_once(monkeypatch):
    monkeypatch.setattr(encoding.torch, "compile", NoCompiler())
    model = random_model(Architecture(backbone="resnet18", feature_dim=32), seed=3).eval()
    image = torch.rand(1, 3, 64, 96)
    gflop = _conv_gflop(model, image)
    for min_gflop, builds in ((gflop * 1.01, 0), (gflop * 0.99, 1)):
        NoCompiler.calls = 0
        encoder = CompiledEncoder(model, torch.device("cpu"), min_gflop)
        assert encoder.describe() == "torch.compile where it pays: decided at the first frame"
        with torch.inference_mode():
            outs = [encoder(image)[0] for _ in range(3)]
        if not builds:
            assert (
                encoder.describe() == f"torch ({gflop:.1f} GFLOP a frame, below model.compile_min_gflop {min_gflop:g})"
            )
        assert encoder.gflop == pytest.approx(gflop, rel=1e-9)
        assert NoCompiler.calls == builds  # the build (failing here) is tried at the first frame, once
        for out in outs:
            torch.testing.assert_close(out, TorchEncoder(model)(image)[0], rtol=0, atol=0)


@pytest.mark.integration
def test_the_compiled_encoder_with_frozen_weights_gives_torch_s_features():
    """A real build (inductor, weights frozen into the graph): about 10 s here."""
    model = random_model(Architecture(backbone="resnet18", feature_dim=32), seed=3).eval()
    image = torch.rand(1, 3, 64, 96).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # channels-last, as uploaded
    compiled = CompiledEncoder(model, torch.device("cpu"), min_gflop=0.0)
    with torch.inference_mode():
        ours, _ = compiled(image)
        again, _ = compiled(image * 0.5)
        ref, _ = TorchEncoder(model)(image)
        ref_half, _ = TorchEncoder(model)(image * 0.5)
    assert compiled.problem is None and compiled.compiled
    assert compiled.describe() == f"compiled ({compiled.gflop:.1f} GFLOP a frame)"
    scale = ref.abs().max()
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(again, ref_half, rtol=0, atol=1e-5 * scale)  # the same build, a new image
