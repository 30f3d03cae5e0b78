"""The ``ebjr`` command line: parse, call the library, print. No logic of its own.

Heavy modules are imported inside the command handlers so that ``--help``
answers fast and numpy-only commands never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ebjr._version import __version__
from ebjr.exceptions import EBJRError

__all__ = ["build_parser", "main"]


#: one module per command, in the order ``ebjr --help`` lists them
COMMANDS = ("evaluate", "calibrate", "cascade", "quickstart", "distill", "serve", "predict", "plan")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ebjr",
        description="Energy-based joint reasoning: route inputs between a fast student and an "
        "accurate teacher by the student's free energy.",
    )
    parser.add_argument("--version", action="version", version=f"ebjr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"ebjr.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EBJRError as exc:
        print(f"ebjr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
