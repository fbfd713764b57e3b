"""``kdbts``: the top-level parser, the sub-commands and their failures.

Each sub-command is a thin module with ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``,
listed in :data:`COMMANDS`, the one registry of sub-commands (a plain table: a source checkout has every
command whatever its installed metadata says). Only the module of the command being run is imported
(``--help`` imports them all), so a light command does not pay for torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from importlib import import_module

from kdbts_ros.core.errors import DEBUG_ENV, classify
from kdbts_ros.core.interrupts import signals_as_exceptions

# the sub-commands and their modules, in --help order
COMMANDS = {
    "demo": "kdbts_ros.commands.demo",
    "import": "kdbts_ros.commands.import_checkpoint",
    "weights": "kdbts_ros.commands.weights",
    "viz": "kdbts_ros.commands.viz",
    "params": "kdbts_ros.commands.params",
    "synth": "kdbts_ros.commands.synth",
    "train": "kdbts_ros.commands.train",
    "kitti2bag": "kdbts_ros.commands.kitti2bag",
    "replay": "kdbts_ros.commands.replay",
    "eval": "kdbts_ros.commands.eval",
    "map-eval": "kdbts_ros.commands.map_eval",
    "export": "kdbts_ros.commands.export",
    "bench": "kdbts_ros.commands.bench",
    "soak": "kdbts_ros.commands.soak",
}
DESCRIPTION = "``kdbts``: command-line tools that run the node's pipeline without ROS."
DEBUG_HELP = f"on a failure, print the Python traceback too (or set {DEBUG_ENV}=1)"
TOP_LEVEL_FLAGS = ("-v", "--verbose", "--debug")  # the top-level options; none takes a value


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``kdbts`` parser with one sub-command per module; with ``only``, just that one's module is loaded
    (the others are names, enough to parse a command line that runs ``only``)."""
    parser = argparse.ArgumentParser(prog="kdbts", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every dropped input")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name)
            continue
        module = import_module(module_name)
        command = sub.add_parser(name, help=module.HELP)
        module.add_arguments(command)
        command.set_defaults(func=module.run)
        # after the command as well as before it; SUPPRESS keeps an earlier one
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The command line's first word after the top-level flags: the sub-command it runs, or a wrong one that argparse
    reports; None when an option comes first (the whole parser is built: ``--help`` shows every command's HELP)."""
    for word in argv:
        if word not in TOP_LEVEL_FLAGS:
            return None if word.startswith("-") else word
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kdbts`` command.

    A failure the user caused (a missing, unreadable, truncated, corrupt or hostile file, a bad
    setting, a full disk, Ctrl-C or SIGTERM) is one line ``kdbts <command>: <file>: <what>`` on
    stderr and an exit code (:mod:`kdbts_ros.core.errors`); anything else is a bug and keeps its
    traceback. ``--debug`` or ``KDBTS_DEBUG=1`` print the traceback of every failure.
    """
    import cv2

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_in(argv)).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    # a corrupt image is reported as one line by the loader; OpenCV's own warnings would add more
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    stdout = sys.stdout
    try:
        with signals_as_exceptions():
            sys.stdout = _NamedStdout(stdout)
            status = args.func(args)
            sys.stdout.flush()  # a full disk or a closed pipe shows now, not when Python exits
            return status
    except BaseException as exc:  # classified below; bugs are re-raised untouched
        failure = classify(exc)
        if failure is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"kdbts {args.command}: {failure.line}", file=sys.stderr)
        return failure.code
    finally:
        if isinstance(sys.stdout, _NamedStdout) and sys.stdout.failed:
            # left open on purpose: unflushed text would fail again when Python exits
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        else:
            sys.stdout = stdout


class _NamedStdout:
    """sys.stdout whose write errors (a full disk, a closed pipe) name it, as file errors name their file."""

    def __init__(self, stream):
        self.stream, self.failed = stream, False

    def write(self, text: str) -> int:
        return self._named(self.stream.write, text)

    def flush(self) -> None:
        self._named(self.stream.flush)

    def _named(self, call, *args):
        try:
            return call(*args)
        except OSError as exc:
            self.failed = True
            exc.filename = exc.filename or "<stdout>"
            raise

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


if __name__ == "__main__":
    sys.exit(main())
