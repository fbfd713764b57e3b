"""kdbts bench: every stage is reported for every case, through the runner and through the rclpy node."""

from __future__ import annotations

import json

import pytest

from kdbts_ros.commands.cli import main

pytestmark = pytest.mark.integration


def _bench(tmp_path, *extra: str) -> dict:
    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "--device",
            "cpu",
            "--networks",
            "embedded",
            "--frames",
            "4",
            "--warmup",
            "2",
            "--depth-scale",
            "0.1",
            "--out",
            str(out),
            *extra,
        ]
    )
    assert rc == 0
    assert "| cpu embedded fast SV(1) float32 |" in (out / "bench.md").read_text()
    return json.loads((out / "bench.json").read_text())


def test_bench_reports_stages_throughput_memory_and_arithmetic_per_case(tmp_path):
    report = _bench(tmp_path, "--windows", "1,2", "--paths", "fast,reference", "--no-publish")
    cases = report["cases"]
    assert [(c["path"], c["window"]) for c in cases] == [("fast", 1), ("fast", 2), ("reference", 1), ("reference", 2)]
    for c in cases:
        assert set(c["stages"]) == {"decode", "resize", "encode", "grid", "depth", "messages"}
        assert all(0 < s["median_ms"] <= s["p99_ms"] for s in c["stages"].values())
        assert c["frames"] == 2 and not c["dropped"]
        # the end-to-end time covers every stage
        assert c["end_to_end"]["median_ms"] >= 0.9 * sum(s["median_ms"] for s in c["stages"].values())
        # frames/s is 1 / mean end-to-end time; with two measured frames the median is that mean
        assert c["fps"] == pytest.approx(1e3 / c["end_to_end"]["median_ms"], rel=1e-6)
        assert c["peak_rss_mb"] > 100 and c["peak_cuda_mb"] is None
        assert c["gflops"]["encode"] > 1
        assert (c["head"], c["views"]) == (("sv", 1) if c["window"] == 1 else ("mv", 2))
    # the arithmetic ceiling is measured once per device and dtype: one figure for every case here
    assert len({c["peak_gflops"] for c in cases}) == 1 and cases[0]["peak_gflops"] > 0
    fast, ref = cases[0], cases[2]
    # the fast path shares view 0's work along each ray: far less arithmetic for the same depth image
    assert fast["gflops"]["depth"] < 0.5 * ref["gflops"]["depth"]


def test_bench_times_the_map_stage_with_map_on(tmp_path):
    report = _bench(tmp_path, "--windows", "1", "--no-publish", "--map")
    assert set(report["cases"][0]["stages"]) == {"decode", "resize", "encode", "grid", "depth", "messages", "map"}
    assert "| map |" in (tmp_path / "bench" / "bench.md").read_text()


def test_bench_through_the_node_times_publishing(tmp_path):
    pytest.importorskip("rclpy")
    pytest.importorskip("kdbts_ros.msg")
    report = _bench(tmp_path, "--windows", "1", "--publish")
    (case,) = report["cases"]
    assert report["publish"] and case["frames"] == 2
    # publishing is timed as a stage of its own, beside the others, and inside the end-to-end time
    assert set(case["stages"]) == {"decode", "resize", "encode", "grid", "depth", "messages", "publish"}
    publish = case["stages"]["publish"]
    assert 0 < publish["median_ms"] <= publish["p99_ms"] <= case["end_to_end"]["p99_ms"]


def test_bench_backends_and_depth_renders_are_case_dimensions(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDBTS_CACHE_DIR", str(tmp_path / "cache"))  # the spawned cases inherit it
    report = _bench(
        tmp_path,
        "--windows",
        "1",
        "--paths",
        "fast,reference",
        "--backends",
        "torch,onnxruntime",
        "--depth",
        "reference,fine",
        "--no-publish",
    )
    cases = report["cases"]
    # onnxruntime and the fine render need the fast path: those reference-path combinations are left out
    assert [(c["backend"], c["path"], c["depth"]) for c in cases] == [
        ("torch", "fast", "reference"),
        ("torch", "fast", "fine"),
        ("torch", "reference", "reference"),
        ("onnxruntime", "fast", "reference"),
        ("onnxruntime", "fast", "fine"),
    ]
    assert "left out cpu embedded reference SV(1) float32 onnxruntime" in capsys.readouterr().err
    md = (tmp_path / "bench" / "bench.md").read_text()
    for label in (
        "cpu embedded fast SV(1) float32 fine-depth",
        "cpu embedded fast SV(1) float32 onnxruntime",
        "cpu embedded fast SV(1) float32 onnxruntime fine-depth",
    ):
        assert f"| {label} |" in md
    ort = [c for c in cases if c["backend"] == "onnxruntime"]
    assert all(c["frames"] == 2 and c["backend_info"]["backend"] == "onnxruntime" for c in ort)
    # the second onnxruntime case reuses the first one's export
    assert not ort[0]["backend_info"]["cached"] and ort[1]["backend_info"]["cached"]
    assert not any(c["backend_info"]["dir"].startswith("/") for c in ort)  # no machine path in a report
    assert ort[0]["gflops"]["grid"] > 0  # counted as the same arithmetic in torch


@pytest.mark.parametrize("extra", [["--frames", "3", "--windows", "4"], ["--frames", "4", "--warmup", "4"]])
def test_frames_not_above_the_warm_up_are_one_line_and_exit_2(tmp_path, capsys, extra):
    rc = main(["bench", "--device", "cpu", "--networks", "embedded", "--out", str(tmp_path / "b"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and "leaves no frame to time after the warm-up" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()  # refused before any network was built
