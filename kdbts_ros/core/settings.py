"""The parameter engine: described settings, their validation, parameter files and the flattened table.

A setting is a dataclass field made with :func:`setting` (description, range, choices, whether it
may change at run time). A configuration is a tree of such dataclasses; its settings have dotted
names (``grid.resolution``). The node declares its ROS parameters from them, the command-line
tools read the same YAML file (ROS 2 parameter-file layout, ``/**: ros__parameters: ...``),
and training uses the same engine for its own schema. The schemas themselves live elsewhere
(:mod:`kdbts_ros.core.config` and the layers above it).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml

from kdbts_ros.core.errors import UserError


class ConfigError(UserError, ValueError):
    """A parameter file or setting that cannot be used; the message names the file (or the command line)."""


def setting(
    default: Any,
    description: str,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    runtime: bool = False,
) -> Any:
    """A dataclass field carrying its parameter description, range and choices."""
    meta = {
        "description": description,
        "range": (lo, hi) if lo is not None else None,
        "choices": choices,
        "runtime": runtime,
    }
    if isinstance(default, list):  # a mutable default needs a fresh copy per instance
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamSpec:
    """One flattened setting: dotted name, default, type and documentation."""

    name: str
    default: Any
    type: type
    description: str
    range: tuple[float, float] | None
    choices: tuple[str, ...] | None
    runtime: bool


def iter_params(cfg: Any, prefix: str = "") -> Iterator[ParamSpec]:
    """Flatten a config dataclass into dotted parameter specs (current values as defaults)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from iter_params(value, f"{prefix}{f.name}.")
            continue
        m = f.metadata
        yield ParamSpec(
            f"{prefix}{f.name}", value, type(value), m["description"], m["range"], m["choices"], m["runtime"]
        )


def validate(spec: ParamSpec, value: Any) -> str | None:
    """Reason why ``value`` is not acceptable for ``spec``, or None if it is."""
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.type is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            return f"{spec.name}: expected a list of non-empty strings, got {value!r}"
        return None
    if not isinstance(value, spec.type) or (spec.type is int and isinstance(value, bool)):
        return f"{spec.name}: expected {spec.type.__name__}, got {type(value).__name__}"
    if spec.range is not None and not spec.range[0] <= cast(float, value) <= spec.range[1]:
        return f"{spec.name}: {value} outside [{spec.range[0]}, {spec.range[1]}]"
    if spec.choices is not None and value not in spec.choices:
        return f"{spec.name}: {value!r} not one of {', '.join(spec.choices)}"
    return None


def get_param(cfg: Any, name: str) -> Any:
    """The value of a dotted parameter of a config tree (``map.enabled``); AttributeError if there is none."""
    for part in name.split("."):
        cfg = getattr(cfg, part)
    return cfg


def set_param(cfg: Any, name: str, value: Any, check: bool = True) -> None:
    """Set a dotted parameter on a config tree after validating it; raises ValueError.

    With ``check`` the cross-field checks run too and a failing change is rolled
    back; loading a whole file sets every value first and checks once.
    """
    specs = {s.name: s for s in iter_params(cfg)}
    if name not in specs:
        raise ValueError(f"unknown parameter {name!r}")
    reason = validate(specs[name], value)
    if reason:
        raise ValueError(reason)
    *path, leaf = name.split(".")
    target = cfg
    for part in path:
        target = getattr(target, part)
    old = getattr(target, leaf)
    setattr(
        target, leaf, float(value) if specs[name].type is float else list(value) if specs[name].type is list else value
    )
    if not check:
        return
    try:
        check_consistency(cfg)
    except ValueError:
        setattr(target, leaf, old)
        raise


def set_params(cfg: Any, changes: list[tuple[str, Any]]) -> None:
    """Set several dotted parameters together or none of them (an atomic parameter set); raises ValueError."""
    trial = copy.deepcopy(cfg)  # validated on a copy: a refused change must not leave the ones before it applied
    for name, value in changes:
        set_param(trial, name, value)
    for name, value in changes:  # the same sequence, now known to pass
        set_param(cfg, name, value)


def check_consistency(cfg: Any) -> None:
    """Run a config tree's cross-field ``check()`` if it has one; raises ValueError."""
    check = getattr(cfg, "check", None)
    if check is not None:
        check()


# settings nest at most section.leaf deep; a deeper tree is no parameter file (and YAML aliases
# could make a deep one expand into millions of keys)
_MAX_DEPTH = 4


def _flatten(tree: dict, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        raise ValueError(f"settings nested deeper than {_MAX_DEPTH} levels at {prefix.rstrip('.')!r}")
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}.", depth + 1))
        else:
            out[f"{prefix}{key}"] = value
    return out


# the node every parameter file is read for when no other is named: kdbts_node in the root namespace
# (the offline tools', and the node's when started without a namespace or another name)
DEFAULT_NODE = "/kdbts_node"


def to_yaml(cfg: Any, node_name: str = "/**") -> str:
    """The config as a commented ROS 2 parameter file (what ``config/default.yaml`` holds).

    Keyed ``/**`` by default: every node reads it, whatever its name and namespace.
    """
    lines = [f"{node_name}:", "  ros__parameters:"]
    opened: list[str] = []
    for spec in iter_params(cfg):
        *groups, leaf = spec.name.split(".")
        common = 0
        while common < min(len(groups), len(opened)) and groups[common] == opened[common]:
            common += 1
        opened = opened[:common]
        for g in groups[common:]:
            lines.append(f"{'  ' * (len(opened) + 2)}{g}:")
            opened.append(g)
        indent = "  " * (len(groups) + 2)
        notes = [spec.description]
        if spec.range is not None:
            notes.append(f"range [{spec.range[0]:g}, {spec.range[1]:g}]")
        if spec.choices:
            notes.append("one of " + "|".join(spec.choices))
        notes.append("runtime" if spec.runtime else "start-up only")
        value = yaml.safe_dump(spec.default, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"{indent}{leaf}: {value}  # {'; '.join(notes)}")
    return "\n".join(lines) + "\n"


def parameter_table(cfg: Any) -> str:
    """The Markdown table of every setting of ``cfg`` (a configuration dataclass): default, range, run-time, text.

    ``kdbts params --format markdown`` prints it, ``docs/node.md`` holds the node's.
    """
    lines = ["| parameter | default | range / choices | runtime | description |", "|---|---|---|---|---|"]
    for s in iter_params(cfg):
        allowed = f"[{s.range[0]:g}, {s.range[1]:g}]" if s.range else ", ".join(s.choices or ())
        lines.append(f"| `{s.name}` | `{s.default!r}` | {allowed} | {'yes' if s.runtime else 'no'} | {s.description} |")
    return "\n".join(lines) + "\n"


Config = TypeVar("Config")


def load_config(
    cls: type[Config],
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    read_elsewhere: Collection[str] = (),
    node: str = DEFAULT_NODE,
) -> Config:
    """Read a YAML file (ROS 2 parameter layout or plain nested mapping) into a checked ``cls`` config.

    In a parameter file, the sections whose key matches ``node`` (a fully qualified node name) are
    read as rcl reads them: ``/**``, ``/**/kdbts_node``, ``kdbts_node``, ``/front/*``..., later ones
    overriding earlier ones. ``read_elsewhere``: settings (or whole sections) of the file that
    another program reads, such as the node's own settings in its parameter file read by an
    offline tool: accepted and left out. Any other name ``cls`` lacks is refused, and so is any
    in ``overrides`` (given for this program).
    """
    cfg = cls()
    values = _read_settings(Path(path), node) if path is not None else {}
    values = {name: value for name, value in values.items() if not _listed(name, read_elsewhere)}
    overrides = overrides or {}
    values.update(overrides)
    for name, value in values.items():
        try:
            set_param(cfg, name, value, check=False)
        except ValueError as exc:
            raise ConfigError(f"{'command line' if name in overrides else path}: {exc}") from exc
    try:
        check_consistency(cfg)
    except ValueError as exc:
        raise ConfigError(f"{path if path is not None else 'command line'}: {exc}") from exc
    return cfg


def _listed(name: str, names: Collection[str]) -> bool:
    """Whether dotted ``name`` or a section it is in (``publish`` for ``publish.depth``) is one of ``names``."""
    parts = name.split(".")
    return any(".".join(parts[:n]) in names for n in range(1, len(parts) + 1))


def read_yaml_mapping(path: Path) -> dict:
    """The mapping a YAML file holds ({} if empty); ConfigError naming the file, OSError if it cannot be read."""
    try:
        tree = yaml.safe_load(path.read_text())
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, found a {type(tree).__name__}")
    return tree


def node_pattern(key: str) -> re.Pattern[str]:
    """The fully qualified node names a parameter file's node key applies to, as rcl matches them.

    ``/**`` matches any namespace and name (or what follows it: ``/**/kdbts_node``), ``*`` one
    token; a key without a leading slash is in the root namespace.
    """
    key = key if key.startswith("/") else "/" + key
    parts = re.split(r"(/\*\*|\*)", key)
    wild = {"/**": "(/[^/]+)*", "*": "[^/]+"}
    return re.compile("".join(wild.get(part, re.escape(part)) for part in parts))


def _merge(into: dict, tree: dict) -> None:
    """Deep-merge ``tree`` into ``into``, ``tree``'s values winning."""
    for key, value in tree.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _read_settings(path: Path, node: str = DEFAULT_NODE) -> dict[str, Any]:
    """Dotted settings of a YAML file for ``node``; raises ConfigError naming the file (OSError when it cannot be read).

    A ROS 2 parameter file nests settings under ``<node key>: ros__parameters:``; every section whose
    key matches ``node`` applies, in the file's order. A file without such sections is plain settings.
    """
    tree = read_yaml_mapping(path)
    sections = {k: v for k, v in tree.items() if isinstance(v, dict) and "ros__parameters" in v}
    if sections:
        tree = {}
        mine = [key for key in sections if node_pattern(str(key)).fullmatch(node)]
        for key in mine:
            params = sections[key]["ros__parameters"] or {}
            if not isinstance(params, dict):
                raise ConfigError(f"{path}: {key}: ros__parameters must be a mapping of settings")
            _merge(tree, params)
        if not mine:
            raise ConfigError(
                f"{path}: no parameters for {node} (sections: {', '.join(map(str, sections))}); "
                "key them /**: to apply to every node"
            )
    try:
        return _flatten(tree)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
