"""The docs say what the code does: docs/node.md's reference is generated from it; reports keep no machine paths."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from kdbts_ros.core.settings import parameter_table
from kdbts_ros.ros.harness import can_publish
from kdbts_ros.ros.reference import COMMAND, NODE_MD, render, sections

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not can_publish(), reason="needs rclpy and the built DensityGrid message")
def test_node_md_reference_is_what_the_code_generates():
    current = NODE_MD.read_text()
    generated = sections()
    assert set(generated) == {"parameters", "subscriptions", "publications", "services"}
    assert render(current, generated) == current, f"docs/node.md differs from the code: run {COMMAND}"


def test_render_replaces_only_between_the_markers_and_refuses_a_missing_section():
    text = (
        "intro\n<!-- generated: a (python -m kdbts_ros.ros.reference rewrites it) -->\nold\n"
        "<!-- end generated: a -->\noutro\n"
    )
    assert render(text, {"a": "new\n"}) == text.replace("old\n", "new\n")
    with pytest.raises(ValueError, match="'b'"):
        render(text, {"b": "x\n"})


def test_parameter_table_has_one_row_per_setting_with_its_range_and_runtime_flag():
    from kdbts_ros.core.settings import iter_params
    from kdbts_ros.ros.config import NodeConfig

    rows = parameter_table(NodeConfig()).splitlines()[2:]
    specs = list(iter_params(NodeConfig()))
    assert [r.split("`")[1] for r in rows] == [s.name for s in specs]
    window = next(r for r in rows if r.startswith("| `window_size` "))
    assert "[1, 64] | yes |" in window


def test_reports_under_docs_keep_no_machine_paths():
    tracked = subprocess.run(["git", "ls-files", "docs", "*.md"], cwd=ROOT, capture_output=True, text=True)
    machine = re.compile(r"(?<![\w.~])/(?:work|root|home|tmp)/")
    found = [
        f"{name}:{i}"
        for name in tracked.stdout.split()
        if name.endswith((".md", ".json"))
        for i, line in enumerate((ROOT / name).read_text().splitlines(), 1)
        if machine.search(line)
    ]
    assert not found, f"machine paths in {found}: write them with kdbts_ros.core.report_paths.report_path"


def test_report_path_keeps_no_machine_folders(tmp_path, monkeypatch):
    from kdbts_ros.core.report_paths import report_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path.parent))
    assert report_path(tmp_path / "weights" / "w.safetensors") == "weights/w.safetensors"
    assert report_path(tmp_path.parent / ".cache" / "onnx" / "key") == "~/.cache/onnx/key"
    assert report_path("/elsewhere/KDBTS") == "KDBTS"
    assert report_path("random (seed 0)") == "random (seed 0)"  # no path: as it is
    assert report_path("kdbts_ros/weights/w.safetensors") == "kdbts_ros/weights/w.safetensors"
