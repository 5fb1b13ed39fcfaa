"""The ``smartassign`` command line: one subcommand module per verb, each only calling the library.

The subcommand modules (and with them torch) are imported inside :func:`main`, so that an interrupt while they
load is the same one line and exit 130 as an interrupt later on, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from smartassign import __version__
from smartassign.errors import SmartAssignError

# Each module defines ``register(subparsers)`` that adds its parser and sets ``func``.
COMMANDS = ("info", "data", "train", "evaluate", "bundle", "restore", "export", "serve")


def commands() -> list[ModuleType]:
    """The subcommand modules, imported (this is what takes the start-up time: torch)."""
    return [importlib.import_module(f"smartassign.cli.{name}") for name in COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="smartassign", description="Remove rain and snow from photographs.")
    parser.add_argument("--version", action="version", version=f"smartassign {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in commands():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn user errors into one line and an exit code (an interrupt: 130)."""
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("smartassign: interrupted", file=sys.stderr)
        return 130


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except SmartAssignError as exc:
        if args.verbose:
            raise
        print(f"smartassign: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
