"""The command line, ``ebjr``: one module per command; parsing and printing only."""

from ebjr.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
