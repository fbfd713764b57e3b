"""Every ``kdbts`` sub-command is a thin module listed in :data:`~kdbts_ros.commands.cli.COMMANDS`.

Each module has ``HELP``, ``add_arguments`` and ``run`` and answers ``--help``; only the module of the
command being run is imported.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from kdbts_ros.commands import cli
from kdbts_ros.core.errors import EXIT_USER


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


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_answers_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([name, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: kdbts {name} ")


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
