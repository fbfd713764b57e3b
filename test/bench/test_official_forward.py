"""The official forward pass beside ours: torchvision stand-in, bench rows, checkout errors, with a checkout densities.

The end-to-end comparison needs a checkout of github.com/keonhee-han/KDBTS named by
the environment variable KDBTS_OFFICIAL_REPO; without it those tests skip.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

import pytest
import torch
from conftest import small_config

from kdbts_ros.bench.latency import OFFICIAL, Case, markdown, official_cases, with_official
from kdbts_ros.bench.official_forward import (
    OfficialCodeError,
    load_official,
    run_official,
    stand_in_modules,
    torchvision_stand_in,
)
from kdbts_ros.commands.cli import main
from kdbts_ros.core.model.resnet import ResNet
from kdbts_ros.data.sequences import synthetic_sample

OFFICIAL_REPO = os.environ.get("KDBTS_OFFICIAL_REPO", "")
needs_official = pytest.mark.skipif(
    not OFFICIAL_REPO, reason="KDBTS_OFFICIAL_REPO does not name a checkout of github.com/keonhee-han/KDBTS"
)
# torchvision's parameter counts (ImageNet heads included)
TORCHVISION_PARAMETERS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


def _shapes(net: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMETERS))
def test_stand_in_resnets_have_our_and_torchvisions_layout_and_run(name, monkeypatch):
    def no_network(*_args, **_kwargs):
        raise AssertionError("the stand-in tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    models = stand_in_modules()["torchvision.models"]
    net = getattr(models, name)(True)  # as the official Monodepth2 calls it: pretrained, positionally
    assert isinstance(net, models.ResNet)
    assert _shapes(net) == _shapes(ResNet(name))
    assert sum(p.numel() for p in net.parameters()) == TORCHVISION_PARAMETERS[name]
    # the official encoder's own pass over the parts
    x = net.maxpool(net.relu(net.bn1(net.conv1(torch.rand(1, 3, 64, 96)))))
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        x = layer(x)
    assert x.shape == (1, 2048 if name == "resnet50" else 512, 2, 3)


def test_stand_in_names_what_it_lacks():
    modules = stand_in_modules()
    assert modules["torchvision.models.resnet"].Bottleneck.expansion == 4
    with pytest.raises(NotImplementedError, match="resnet101 is not among"):
        modules["torchvision.models"].resnet101(False)
    with pytest.raises(
        AttributeError, match=re.escape("transforms.Compose is not in kdbts_ros's torchvision stand-in")
    ):
        modules["torchvision.transforms"].Compose  # noqa: B018


def test_stand_in_is_used_only_inside_the_block_and_only_without_a_working_torchvision():
    before = {k: m for k, m in sys.modules.items() if k.split(".")[0] == "torchvision"}
    with torchvision_stand_in() as installed:
        import torchvision

        assert (torchvision.__version__ == "stand-in") == installed
        if installed:
            from torchvision import transforms  # noqa: F401
            from torchvision.models import resnet50  # noqa: F401
    if installed:
        assert {k: m for k, m in sys.modules.items() if k.split(".")[0] == "torchvision"} == before


def test_a_folder_that_is_not_a_checkout_is_refused(tmp_path):
    with pytest.raises(OfficialCodeError, match=re.escape("not a checkout of github.com/keonhee-han/KDBTS")):
        load_official(tmp_path)


def test_a_missing_dependency_of_the_network_code_is_named_and_nothing_is_left_imported(tmp_path):
    package = tmp_path / "models" / "bts" / "model"
    package.mkdir(parents=True)
    for init in (tmp_path / "models", tmp_path / "models" / "bts"):
        (init / "__init__.py").write_text("")
    (package / "__init__.py").write_text("raise AssertionError('the training-side package init ran')\n")
    (package / "models_bts.py").write_text("import kdbts_test_absent_dependency\n")
    with pytest.raises(OfficialCodeError, match="imports 'kdbts_test_absent_dependency', which is not installed"):
        load_official(tmp_path)
    assert not [k for k in sys.modules if k == "models" or k.startswith("models.")]
    assert str(tmp_path) not in sys.path


def test_bench_makes_one_official_row_per_device_and_window_of_the_resnet50_cases():
    cases = [
        Case("resnet50", "cpu", "fast", 1),
        Case("embedded", "cpu", "fast", 2),
        Case("resnet50", "cpu", "reference", 1),
        Case("resnet50", "cpu", "fast", 4, "bfloat16"),
    ]
    assert official_cases(cases) == [Case("resnet50", "cpu", OFFICIAL, 1), Case("resnet50", "cpu", OFFICIAL, 4)]
    # each official case runs right after the last of ours it is compared with
    assert with_official(cases) == [*cases[:3], official_cases(cases)[0], cases[3], official_cases(cases)[1]]
    case = official_cases(cases)[1]
    ms = {"median_ms": 10.0, "p99_ms": 12.0}
    row = {
        "network": case.network,
        "device": case.device,
        "path": case.path,
        "window": case.window,
        "dtype": case.dtype,
        "label": case.label,
        "stages": {"encode": ms, "grid": ms},
        "end_to_end": {"median_ms": 20.0, "p99_ms": 24.0},
        "fps": 50.0,
        "peak_rss_mb": None,
        "peak_cuda_mb": None,
        "gflops": {"encode": 2.0, "grid": 1.0},
        "peak_gflops": 100.0,
        "official": {"repo": "/src/KDBTS", "torchvision": "stand-in"},
        "agreement": {"points": 45000, "frames": 6, "max_abs_diff": 4.8e-7, "max_density": 9.5, "max_rel_diff": 5.0e-8},
    }
    ours = {
        **row,
        "path": "fast",
        "label": "cpu resnet50 fast MV(4) float32",
        "stages": {"encode": ms, "grid": ms, "depth": ms},
        "end_to_end": {"median_ms": 8.0, "p99_ms": 9.0},
        "gflops": {"encode": 2.0, "grid": 1.0, "depth": 1.0},
    }
    embedded = {**ours, "network": "embedded", "label": "cpu embedded fast MV(4) float32"}
    table = markdown({"machine": "test", "cases": [ours, embedded, row]})
    # official 20 ms end to end against ours 8 ms; the embedded network is not compared
    assert "| cpu resnet50 fast MV(4) float32 | cpu resnet50 official MV(4) float32 | 8.0 | 20.0 | 2.50x |" in table
    assert "| cpu embedded fast MV(4) float32 | cpu resnet50 official" not in table
    # decode, resize, encode, grid, depth, messages, map, publish; end-to-end, frames/s, memory
    expected = "| cpu resnet50 official MV(4) float32 | - | - | 10.0 | 10.0 | - | - | - | - | 20.0 / 24.0 | 50.00 | - |"
    assert expected in table
    assert "| cpu resnet50 official MV(4) float32 | depth |" not in table
    assert "| cpu resnet50 official MV(4) float32 | stand-in | 45000 x 6 | 4.8e-07 | 9.5 | 5.0e-08 |" in table


def test_bench_refuses_official_without_resnet50_or_a_checkout(tmp_path, capsys):
    args = ["bench", "--device", "cpu", "--frames", "9", "--no-publish", "--out", str(tmp_path / "out")]
    assert main([*args, "--networks", "embedded", "--official", str(tmp_path)]) == 2
    assert "add resnet50 to --networks" in capsys.readouterr().err
    assert main([*args, "--networks", "resnet50", "--official", str(tmp_path)]) == 2
    assert "not a checkout of github.com/keonhee-han/KDBTS" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@needs_official
def test_the_official_network_imports_from_the_checkout():
    code = load_official(OFFICIAL_REPO)
    assert code.MVBTSNet.__module__ == "models.bts.model.models_bts" and code.torchvision in ("installed", "stand-in")
    assert "models" not in sys.modules and "models.bts.model" not in sys.modules


@needs_official
@pytest.mark.parametrize("mode, window", [("sv", 1), ("mv", 3)])
def test_the_official_forward_pass_gives_our_densities(mode, window):
    cfg = small_config(mode=mode, window_size=window)  # ResNet-18 at 64x192, 7,200 grid cells
    res = run_official(Path(OFFICIAL_REPO), cfg, synthetic_sample(4, 192, 64), warmup=1)
    assert res["frames"] == 3 and (res["head"], res["views"]) == (mode, window)
    assert set(res["stages"]) == {"encode", "grid"}
    assert all(0 < s["median_ms"] <= s["p99_ms"] for s in res["stages"].values())
    assert res["gflops"]["encode"] > 0 and res["gflops"]["grid"] > 0
    a = res["agreement"]
    assert a["points"] == 7200 and a["frames"] == 4 and a["max_density"] > 0.1
    assert a["max_abs_diff"] <= 1e-5 * a["max_density"]
