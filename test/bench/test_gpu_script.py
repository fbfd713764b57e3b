"""The prepared GPU run: its plan without a GPU, and its targets table from a bench report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdbts_ros.bench import gpu_script


def test_the_plan_benches_fp16_compiled_and_fp32_at_full_size_and_writes_under_docs():
    steps = gpu_script.plan("gpu_x", Path("docs/performance"))
    assert len(steps) == 2  # no trtexec: no TensorRT steps
    fp16, fp32 = (s.argv for s in steps)
    for argv, dtype in ((fp16, "float16"), (fp32, "float32")):
        opts = dict(zip(argv[2::2], argv[3::2], strict=False))
        assert argv[1] == "bench" and opts["--device"] == "cuda" and opts["--dtype"] == dtype
        assert opts["--windows"] == "1,4" and opts["--depth-scale"] == "1" and "resnet50" in opts["--networks"]
        assert int(opts["--frames"]) - int(opts["--warmup"]) >= 200  # enough frames for a p99
    assert "--compile" in fp16 and "--no-compile" in fp32 and "--compile" not in fp32
    assert [s.writes for s in steps] == [
        Path("docs/performance/gpu_x_fp16_compiled"),
        Path("docs/performance/gpu_x_fp32"),
    ]


def test_with_trtexec_the_plan_exports_and_builds_fp16_engines_from_the_export():
    steps = gpu_script.plan("gpu_x", Path("d"), kdbts="kdbts", trtexec="/opt/trt/trtexec")
    export, *engines = steps[2:]
    assert export.argv == ["kdbts", "export", "--out", "d/gpu_x_tensorrt"]
    assert [e.argv[0] for e in engines] == ["/opt/trt/trtexec"] * 2
    for e, graph in zip(engines, ("encoder", "query_sv"), strict=True):
        assert f"--onnx=d/gpu_x_tensorrt/{graph}.onnx" in e.argv and "--fp16" in e.argv
        assert e.writes == Path(f"d/gpu_x_tensorrt/{graph}_fp16.engine")


def test_device_tags_are_file_names():
    assert gpu_script.device_tag("NVIDIA H100 80GB HBM3") == "gpu_nvidia_h100_80gb_hbm3"
    assert gpu_script.device_tag("Orin (nvgpu)") == "gpu_orin_nvgpu"


def _case(label: str, fps: float, p99: float) -> dict:
    return {"label": label, "fps": fps, "end_to_end": {"median_ms": 1e3 / fps, "p99_ms": p99}}


def test_the_targets_table_says_which_target_is_met_and_by_how_much_the_others_are_not():
    report = {
        "machine": "m",
        "cases": [
            _case("cuda resnet50 fast SV(1) float16", 480.0, 3.0),
            _case("cuda resnet50 fast MV(4) float16", 150.0, 7.5),
            _case("cuda resnet50 official MV(8) float32", 10.0, 99.0),  # no target: left out
        ],
    }
    rows = [r for r in gpu_script.targets_table(report).splitlines() if r.startswith("| cuda")]
    assert rows == [
        "| cuda resnet50 fast SV(1) float16 | 480.0 | 400 | 3.00 | yes | yes |",
        "| cuda resnet50 fast MV(4) float16 | 150.0 | 200 | 7.50 | no (0.75x) | no (+2.5 ms) |",
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_the_script_prints_its_plan_or_one_line_and_exit_2(tmp_path):
    run = [sys.executable, "-m", "kdbts_ros.bench.gpu_script", "--docs", str(tmp_path)]
    planned = subprocess.run([*run, "--plan"], capture_output=True, text=True, check=False)
    assert planned.returncode == 0 and "--dtype float16" in planned.stdout and "targets table" in planned.stdout
    refused = subprocess.run(run, capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "no CUDA device" in refused.stderr
    assert not any(tmp_path.iterdir())  # nothing started, nothing written
