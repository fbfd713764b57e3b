"""The package's layers point one way: drawn from the code's imports (ast), every arrow points down.

Sub-packages in order; each imports only itself and the ones before it. rclpy (and tf2_ros, and the
rosidl-generated ``kdbts_ros.msg``) only in ``ros``; the message layer loads no torch.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kdbts_ros"
LAYERS = ("core", "messages", "data", "runtime", "training", "evaluation", "ros", "bench", "commands")
ROS_ONLY = ("rclpy", "tf2_ros", "kdbts_ros.msg")
GENERATED = "msg"  # rosidl output of tools/build_msgs.sh, not ours
# the commands that run rclpy (the live node under load, bench's publishing harness); the others are offline tools
RCLPY_COMMANDS = ("kdbts_ros.commands.bench", "kdbts_ros.commands.soak")
# what an offline command may read of ros/: the node's settings (kdbts params prints them), which load no rclpy
NODE_SETTINGS = "kdbts_ros.ros.config"


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module we wrote."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[1] == GENERATED:
            continue
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path) -> set[str]:
    """Absolute names of everything a file imports, at any depth (function-level imports count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; the layer rule reads absolute names"
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def layer(module: str) -> str | None:
    """The sub-package of kdbts_ros.<layer>.…, None for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def internal_edges() -> list[tuple[str, str]]:
    mods = modules()
    edges = []
    for mod, path in mods.items():
        for name in imports(path):
            while name and name not in mods and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in mods and name != mod:
                edges.append((mod, name))
    return edges


def test_every_sub_package_is_in_a_layer():
    found = {layer(m) for m in modules()} - {None}
    assert found == set(LAYERS), (
        f"sub-packages without a layer (add them to LAYERS and the README): {found ^ set(LAYERS)}"
    )


def test_imports_point_down_the_layers():
    upward = [
        (a, b)
        for a, b in internal_edges()
        if layer(b) is not None
        and layer(a) != layer(b)
        and (layer(a) is None or LAYERS.index(layer(b)) > LAYERS.index(layer(a)))
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(f"{a} -> {b}" for a, b in sorted(upward))


def test_no_import_cycles():
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for a, b in internal_edges():
        graph[a].add(b)
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n] if n in path else [m, n]
            if n not in state and (cycle := visit(n, path + [n])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m, [m])):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_only_the_ros_layer_imports_ros():
    offenders = [
        (m, n)
        for m, path in modules().items()
        if layer(m) != "ros"
        for n in imports(path)
        if any(n == r or n.startswith(r + ".") for r in ROS_ONLY)
    ]
    assert not offenders, f"ROS imported outside kdbts_ros.ros: {offenders}"


def reachable(edges: list[tuple[str, str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    seen, todo = set(), [start]
    while todo:
        for n in graph.get(todo.pop(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def test_offline_commands_do_not_import_the_ros_layer():
    """Offline tools (demo, replay, ...) build the runner in the runtime layer; only rclpy commands reach ros/."""
    edges = internal_edges()
    offenders = {
        m: sorted(n for n in reachable(edges, m) if layer(n) == "ros" and n != NODE_SETTINGS)
        for m in modules()
        if layer(m) == "commands" and m not in RCLPY_COMMANDS
    }
    offenders = {m: found for m, found in offenders.items() if found}
    assert not offenders, f"offline commands importing kdbts_ros.ros: {offenders}"
    assert not [n for n in reachable(edges, NODE_SETTINGS) if layer(n) == "ros"], "the node's settings import ros/"


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The checks above can fail: a core module importing the runtime is reported."""
    fake = tmp_path / "kdbts_ros"
    for name in ("core", "runtime"):
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "core" / "grid.py").write_text("from kdbts_ros.runtime.runner import FrameRunner\n")
    (fake / "runtime" / "runner.py").write_text("import rclpy\nfrom kdbts_ros.core import grid\n")
    for name in ("ros", "commands"):
        (fake / name).mkdir()
        (fake / name / "__init__.py").write_text("")
    (fake / "ros" / "node.py").write_text("")
    (fake / "commands" / "replay.py").write_text("from kdbts_ros.runtime import runner\nimport kdbts_ros.ros.node\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match=re.escape("kdbts_ros.core.grid -> kdbts_ros.runtime.runner")):
        test_imports_point_down_the_layers()
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycles()
    with pytest.raises(AssertionError, match="rclpy"):
        test_only_the_ros_layer_imports_ros()
    with pytest.raises(AssertionError, match=re.escape("kdbts_ros.commands.replay': ['kdbts_ros.ros.node']")):
        test_offline_commands_do_not_import_the_ros_layer()


def test_message_conversion_and_data_load_no_torch():
    """``kdbts kitti2bag``, a pure conversion, and the launch file's bag check must not pay for torch."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import kdbts_ros.data, kdbts_ros.messages\n"
        "for pkg in (kdbts_ros.messages, kdbts_ros.data):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
        "print(len(sys.modules), sorted(m for m in ('torch', 'rclpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert int(out[0]) > 100 and out[1].strip() == "[]"  # the modules were imported, and neither torch nor rclpy


def test_the_import_reader_sees_every_form_of_import(tmp_path):
    """The checks above pass vacuously if the graph misses imports: every form is read, and real arrows are seen."""
    source = tmp_path / "m.py"
    source.write_text(
        "import kdbts_ros.core.grids\n"
        "from kdbts_ros.runtime import runner\n"
        "def f():\n    import rclpy\n"
        "if f:\n    from kdbts_ros.messages.cdr import header as h\n"
    )
    assert imports(source) == {
        "kdbts_ros.core.grids",
        "kdbts_ros.runtime",
        "kdbts_ros.runtime.runner",
        "rclpy",
        "kdbts_ros.messages.cdr",
        "kdbts_ros.messages.cdr.header",
    }
    source.write_text("from . import sibling\n")
    with pytest.raises(AssertionError, match="relative import"):
        imports(source)
    # the node drives the runner, the runner the core: arrows the graph must hold
    arrows = {(layer(a), layer(b)) for a, b in internal_edges()}
    assert {("ros", "runtime"), ("runtime", "core")} <= arrows
