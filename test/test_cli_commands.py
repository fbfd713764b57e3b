"""Every ``kdbts`` sub-command is a small module registered in the entry-point group ``kdbts_ros.commands``.

setup.py registers exactly the built-in :data:`~kdbts_ros.commands.cli.COMMANDS`, in their order; each
module has ``HELP``, ``add_arguments`` and ``run``; an installed distribution's entry point adds a
command; only the module of the command being run is imported.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from kdbts_ros.commands import cli
from kdbts_ros.core.errors import EXIT_USER

ROOT = Path(__file__).resolve().parents[1]


def _setup_entry_points() -> dict[str, list[str]]:
    """The ``entry_points=`` argument of setup.py's setup() call, read without running setup.py."""
    for node in ast.walk(ast.parse((ROOT / "setup.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for kw in node.keywords:
                if kw.arg == "entry_points":
                    return ast.literal_eval(kw.value)
    raise AssertionError("setup.py: no setup(entry_points=...)")


def test_setup_py_registers_exactly_the_built_in_commands_in_their_order():
    registered = [tuple(part.strip() for part in line.split("=", 1)) for line in _setup_entry_points()[cli.GROUP]]
    assert registered == list(cli.COMMANDS.items())
    assert "kdbts = kdbts_ros.commands.cli:main" in _setup_entry_points()["console_scripts"]


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_module_has_help_arguments_and_run(name):
    module = importlib.import_module(cli.COMMANDS[name])
    assert isinstance(module.HELP, str) and module.HELP
    assert callable(module.add_arguments) and callable(module.run)
    assert module.__name__.startswith("kdbts_ros.commands.")


def test_help_lists_the_built_in_commands_in_order(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "{" + ",".join(cli.COMMANDS) + "}" in out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("    ") and line[4] != " "]
    assert listed == list(cli.COMMANDS)


@pytest.fixture
def installed_extra(tmp_path, monkeypatch):
    """A distribution on sys.path whose entry point adds ``kdbts hello``."""
    (tmp_path / "kdbts_hello_cmd.py").write_text(
        'HELP = "say hello"\n'
        "def add_arguments(p):\n    p.add_argument('--name', default='world')\n"
        "def run(args):\n    print(f'hello {args.name}')\n    return 3\n"
    )
    info = tmp_path / "kdbts_hello-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kdbts-hello\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{cli.GROUP}]\nhello = kdbts_hello_cmd\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("kdbts_hello_cmd", None)


def test_an_installed_entry_point_adds_a_command_after_the_built_in_ones(installed_extra, capsys):
    assert list(cli.commands()) == [*cli.COMMANDS, "hello"]
    assert cli.main(["hello", "--name", "there"]) == 3
    assert capsys.readouterr().out == "hello there\n"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "{" + ",".join([*cli.COMMANDS, "hello"]) + "}" in capsys.readouterr().out


def test_running_a_light_command_imports_neither_torch_nor_the_other_commands():
    code = (
        "import contextlib, io, sys\nfrom kdbts_ros.commands.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['params']) == 0\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('kdbts_ros.commands.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(sorted(["kdbts_ros.commands.cli", "kdbts_ros.commands.params"]))


def test_the_demo_reads_its_kitti_default_when_it_runs(tmp_path, monkeypatch, capsys):
    """The $KDBTS_KITTI_SAMPLE default is a decision of the command, not of the parser built at import."""
    monkeypatch.setenv("KDBTS_KITTI_SAMPLE", str(tmp_path / "nowhere"))
    assert cli.main(["demo", "--source", "kitti", "--out", str(tmp_path / "out")]) == EXIT_USER
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
