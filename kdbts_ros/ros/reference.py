"""The reference sections of ``docs/node.md``, generated from the code so that they cannot drift from it.

Four sections, one function each: the parameters (every described field of the configuration
schema), and the node's subscriptions, publications and services, read from a ``KdbtsNode``
configured in this process (its own entities, with their message types and QoS).
``python -m kdbts_ros.ros.reference`` rewrites them between their markers in ``docs/node.md``;
``--check`` only says whether they are up to date (``test/package/test_docs.py`` asks the same).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdbts_ros.core.settings import iter_params, parameter_table
from kdbts_ros.messages.topics import DIAGNOSTICS, qualified
from kdbts_ros.ros.config import NodeConfig

NODE_MD = Path(__file__).resolve().parents[2] / "docs" / "node.md"
COMMAND = "python -m kdbts_ros.ros.reference"
BEGIN = "<!-- generated: {name} ({command} rewrites it) -->"
END = "<!-- end generated: {name} -->"

# topics the node names itself, without a parameter
FIXED_TOPICS = {
    "/tf": "transforms; each camera's pose is looked up in `fixed_frame` at its image stamp",
    "/tf_static": "static transforms",
    DIAGNOSTICS: "1 Hz from `configure` to `cleanup`, also while inactive ([what it carries](#outputs))",
}
# a small random network: the entities do not depend on the weights, and it loads at once
_QUICK_MODEL = {
    "model.checkpoint": "random",
    "model.backbone": "resnet18_half",
    "model.image_height": 32,
    "model.image_width": 64,
}


def node_settings() -> Any:
    """The settings the node declares as its parameters, at their defaults (the seam to the schema)."""
    return NodeConfig()


def parameters_section() -> str:
    """The node's parameters: the configuration schema with its defaults."""
    return parameter_table(node_settings())


def _topic_parameters() -> dict[str, tuple[str, str]]:
    """Default topic name, as a node without a namespace resolves it -> (the ``topics.*`` parameter that sets
    it, its description); lists as ``name[N]``."""
    found = {}
    for s in iter_params(node_settings()):
        if not s.name.startswith("topics."):
            continue
        for topic in s.default if isinstance(s.default, list) else [s.default]:
            if isinstance(topic, str):  # the others (topics.mono16_bits) name no topic
                found[qualified(topic)] = (f"{s.name}[N]" if isinstance(s.default, list) else s.name, s.description)
    return found


def _type_name(cls: type) -> str:
    """``nav_msgs.msg._occupancy_grid.OccupancyGrid`` -> ``nav_msgs/msg/OccupancyGrid``."""
    package, kind = cls.__module__.split(".")[:2]
    return f"{package}/{kind}/{cls.__name__}"


def _qos(profile: Any) -> str:
    return (
        f"keep last {profile.depth}, {profile.reliability.name.lower().replace('_', ' ')}, "
        f"{profile.durability.name.lower().replace('_', ' ')}"
    )


def _topic_rows(entities: Any) -> str:
    """A table of topics: name, type, QoS with the default parameters, the parameter naming it, what it is."""
    by_parameter = _topic_parameters()
    lines = ["| topic | type | QoS | set by | description |", "|---|---|---|---|---|"]
    for e in entities:
        parameter, text = by_parameter.get(e.topic_name, ("", FIXED_TOPICS.get(e.topic_name, "")))
        shown = f"`{parameter}`" if parameter else ""
        lines.append(f"| `{e.topic_name}` | `{_type_name(e.msg_type)}` | {_qos(e.qos_profile)} | {shown} | {text} |")
    return "\n".join(lines) + "\n"


def subscriptions_section(node: Any) -> str:
    """What the configured node subscribes to (one camera, the default topics)."""
    return _topic_rows(node.subscriptions)


def publications_section(node: Any) -> str:
    """What the configured node publishes (rclpy's own /parameter_events left out)."""
    return _topic_rows(p for p in node.publishers if p.topic_name != "/parameter_events")


def services_section(node: Any) -> str:
    """The node's own services with their handler's text, then the ones rclpy adds, by name."""
    own, rclpy_services = [], []
    for s in node.services:
        func = getattr(s.callback, "__func__", s.callback)
        if func.__qualname__.startswith(f"{type(node).__name__}."):
            text = " ".join((func.__doc__ or "").split()).partition(": ")[2]
            own.append(f"| `{s.srv_name}` | `{_type_name(s.srv_type)}` | {text} |")
        else:
            rclpy_services.append(f"`~/{s.srv_name.rpartition('/')[2]}`")
    return (
        "| service | type | description |\n|---|---|---|\n"
        + "\n".join(own)
        + f"\n\nAnd rclpy's parameter and lifecycle services: {', '.join(rclpy_services)}.\n"
    )


@contextmanager
def configured_node() -> Iterator[Any]:
    """A ``KdbtsNode`` in this process, configured (entities created) with a small random network."""
    import rclpy
    from rclpy.parameter import Parameter

    from kdbts_ros.ros.harness import can_publish
    from kdbts_ros.ros.node import KdbtsNode

    if not can_publish():
        raise RuntimeError("the node's reference needs rclpy and the built DensityGrid message (make setup)")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = KdbtsNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in _QUICK_MODEL.items()])
        try:
            node.trigger_configure()
            if node.runner is None:
                raise RuntimeError("the node failed to configure (see its log)")
            yield node
        finally:
            node.destroy_node()
    finally:
        context.try_shutdown()


def sections() -> dict[str, str]:
    """Every generated section of docs/node.md by name."""
    with configured_node() as node:
        return {
            "parameters": parameters_section(),
            "subscriptions": subscriptions_section(node),
            "publications": publications_section(node),
            "services": services_section(node),
        }


def render(text: str, generated: dict[str, str]) -> str:
    """``text`` with the body between each section's markers replaced by its generated version."""
    for name, body in generated.items():
        begin, end = BEGIN.format(name=name, command=COMMAND), END.format(name=name)
        found = re.search(re.escape(begin) + r"\n.*?" + re.escape(end), text, re.DOTALL)
        if found is None:
            raise ValueError(f"no generated section {name!r} in the text (markers: {begin} ... {end})")
        text = f"{text[: found.start()]}{begin}\n{body}{end}{text[found.end() :]}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/node.md differs, writing nothing")
    parser.add_argument("--file", type=Path, default=NODE_MD, help="the page to rewrite (default: docs/node.md)")
    args = parser.parse_args(argv)
    current = args.file.read_text()
    wanted = render(current, sections())
    if wanted == current:
        return 0
    if args.check:
        print(f"{args.file} differs from the code: run {COMMAND}", file=sys.stderr)
        return 1
    args.file.write_text(wanted)
    print(f"rewrote {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
