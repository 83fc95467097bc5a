"""The `fcmlc` command line: `fcmlc <command> --help` for each command.

One module per command group registers its sub-commands (:mod:`.simulate`, :mod:`.frequentist`,
:mod:`.inference`, :mod:`.exact`, :mod:`.validation`, :mod:`.reproduce`); the argument helpers they share are in
:mod:`._args`. The commands compute with the library and only parse and print here.
"""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import exact, frequentist, inference, reproduce, simulate, validation
from ._args import add_common_generation_args, add_grid_args, grid_from_args, parse_experiments

__all__ = ["build_parser", "main", "add_common_generation_args", "add_grid_args", "grid_from_args",
           "parse_experiments"]

#: The command groups, in the order `fcmlc --help` lists their commands.
COMMAND_GROUPS = (simulate, inference, exact, frequentist, validation, reproduce)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `fcmlc` with every sub-command."""
    parser = argparse.ArgumentParser(prog="fcmlc", description="Sterile-neutrino global fits: FCMLC (simulation-"
                                     "based inference), Wilks and Feldman-Cousins on the same grid.")
    parser.add_argument("--version", action="version", version=f"fcmlc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv=None) -> int:
    """Run `fcmlc` with ``argv`` (default: the process's arguments); returns the exit status
    (2 with a one-line message for bad input, 130 on Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError) as e:
        print(f"fcmlc {args.command}: error: {e}", file=sys.stderr)
        return 2
