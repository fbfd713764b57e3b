"""The wheel pip builds of this checkout holds the whole package, and a fresh venv that installs it runs ``kdbts``.

Built as a user's ``pip wheel .`` builds it, but offline: from a copy of the checkout as git
sees it (no build outputs, no rosidl output), with this venv's setuptools (--no-build-isolation).
The fresh venvs get their dependencies from this venv's site-packages through a .pth file
and install only kdbts_ros itself (--no-deps); the commands run outside the checkout, without
PYTHONPATH. The editable install of ``make venv`` is checked the same way. Selected with
``-m build`` (about a minute on two cores).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import copy_checkout

from kdbts_ros.commands.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kdbts_ros"
pytestmark = pytest.mark.build

SUB_PACKAGES = (
    "core",
    "core/model",
    "messages",
    "data",
    "runtime",
    "training",
    "evaluation",
    "ros",
    "bench",
    "commands",
)


def _clean_env() -> dict[str, str]:
    """The environment without this venv and without PYTHONPATH: what a user's shell has."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    return {k: v for k, v in os.environ.items() if k not in drop} | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _run(args: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )


def _fresh_venv(path: Path) -> Path:
    """A new venv seeing this venv's packages after its own (a .pth file); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    own = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], path).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (own / "zz_kdbts_test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return python


def _pip(python: Path, *args: str | Path, cwd: Path) -> None:
    """pip (this venv's, seen through the .pth) installing into the venv of ``python``; no index, no deps."""
    run = _run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *args], cwd)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src") / "kdbts_ros"
    copy_checkout(src)
    return src


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            out,
            source,
        ],
        source,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    wheels = list(out.glob("kdbts_ros-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def entry_points(wheel) -> configparser.ConfigParser:
    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/entry_points.txt"))
        parser = configparser.ConfigParser(delimiters=("=",))
        parser.optionxform = str  # entry point names are case-sensitive
        parser.read_string(whl.read(name).decode())
    return parser


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The venv the wheel is installed into."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    python = _fresh_venv(venv)
    _pip(python, wheel, cwd=venv.parent)
    return venv


def test_wheel_holds_every_module_its_c_source_the_weights_and_the_message_definitions(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        for sub in SUB_PACKAGES:
            assert f"kdbts_ros/{sub}/__init__.py" in names, sub
        ours = {
            p.relative_to(ROOT).as_posix()
            for pattern in ("*.py", "*.c")  # march.c is built on the user's machine: it ships as source
            for p in PACKAGE.rglob(pattern)
            if p.relative_to(PACKAGE).parts[0] != "msg"
        }
        assert ours <= names, f"modules missing from the wheel: {sorted(ours - names)}"
        # the rosidl output is useless without its typesupport libraries: never packaged
        assert not [n for n in names if n.startswith("kdbts_ros/msg/") or n.endswith(".so")]
        weights = sorted((PACKAGE / "weights").glob("*.safetensors"))
        assert [w.name for w in weights] == ["kdbts_real.safetensors", "kdbts_synth.safetensors"]
        for w in weights:
            assert whl.read(f"kdbts_ros/weights/{w.name}") == w.read_bytes(), w.name
        msgs = sorted((ROOT / "msg").glob("*.msg"))
        assert msgs
        for msg in msgs:
            assert whl.read(f"kdbts_ros/interfaces/{msg.name}") == msg.read_bytes(), msg.name
        metadata = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert re.search(r"^Name: kdbts_ros$", metadata, re.M) and re.search(r"^Requires-Dist: torch", metadata, re.M)


# run in the installed venv: each entry point's module is found there (importing only its parent
# packages: kdbts_node's imports rclpy) and defines the name the entry point calls
RESOLVE = """
import ast, importlib.metadata as md, importlib.util, json, sys
problems = []
for ep in md.distribution("kdbts_ros").entry_points:
    spec = importlib.util.find_spec(ep.module)
    if spec is None or not spec.origin or not spec.origin.startswith(sys.prefix):
        problems.append(f"[{ep.group}] {ep.name} = {ep.value}: module {ep.module} not installed here")
        continue
    names = set()
    for node in ast.parse(open(spec.origin).read()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    if ep.attr and ep.attr.split(".")[0] not in names:
        problems.append(f"[{ep.group}] {ep.name} = {ep.value}: {ep.module} defines no {ep.attr}")
print(json.dumps(problems))
"""


def test_console_scripts_and_every_entry_point_resolve_in_the_installed_venv(installed, entry_points, tmp_path):
    scripts = dict(entry_points["console_scripts"])
    assert {"kdbts", "kdbts_node"} <= set(scripts), scripts
    for name in scripts:
        assert (installed / "bin" / name).is_file(), name
    run = _run([installed / "bin/python", "-c", RESOLVE], tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == []


def test_installed_package_is_the_venvs_not_the_checkout(installed, tmp_path):
    probe = (
        "import importlib.metadata as md, kdbts_ros, kdbts_ros.evaluation, kdbts_ros.core.model; "
        "print(kdbts_ros.__file__); print(md.version('kdbts_ros'))"
    )
    run = _run([installed / "bin/python", "-c", probe], tmp_path)
    assert run.returncode == 0, run.stderr
    module, version = run.stdout.split()
    assert Path(module).is_relative_to(installed), module
    assert version == "0.1.0"
    assert (Path(module).parent / "weights/kdbts_real.safetensors").is_file()


def _sub_commands(help_text: str) -> list[str]:
    """The sub-commands: kdbts --help's list."""
    choices = re.search(r"\{([\w,-]+)\}", help_text)
    assert choices, help_text
    return choices[1].split(",")


def test_installed_kdbts_and_each_sub_command_answer_help(installed, tmp_path):
    kdbts = installed / "bin/kdbts"
    top = _run([kdbts, "--help"], tmp_path)
    assert top.returncode == 0, top.stderr
    assert top.stdout.startswith("usage: kdbts"), top.stdout
    commands = _sub_commands(top.stdout)
    assert sorted(commands) == sorted(COMMANDS), commands  # the installed wheel has exactly the registered ones
    failed = {}
    for name in commands:
        run = _run([kdbts, name, "--help"], tmp_path)
        if run.returncode != 0 or not re.match(rf"usage: kdbts {re.escape(name)}\b", run.stdout):
            failed[name] = f"exit {run.returncode}: {(run.stdout + run.stderr)[-600:]}"
    assert not failed, failed


def test_editable_install_runs_the_checkout_in_place(source, tmp_path):
    """``make venv``'s ``pip install --no-deps --no-build-isolation -e .`` with pyproject.toml and setup.py."""
    python = _fresh_venv(tmp_path / "venv")
    _pip(python, "--no-build-isolation", "-e", source, cwd=source)
    run = _run([python, "-c", "import kdbts_ros.core.model; print(kdbts_ros.__file__)"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()) == source / "kdbts_ros/__init__.py"
    cli = _run([tmp_path / "venv/bin/kdbts", "--help"], tmp_path)
    assert cli.returncode == 0 and cli.stdout.startswith("usage: kdbts"), cli.stderr
