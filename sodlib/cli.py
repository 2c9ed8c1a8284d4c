"""Command line: ``python -m sodlib <command> ...``.

Each command group lives in the module that owns the work and exposes ``register(subparsers)``,
which adds its sub-parser and sets ``func`` (taking the parsed arguments, returning an exit code).
This file only wires them together; it is the one place in the library that prints, through the
commands it calls.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Modules that add commands, in the order they appear in ``--help``.
COMMAND_MODULES = [
    "sodlib.data.commands",
    "sodlib.stats.commands",
    "sodlib.bench.commands",
    "sodlib.models.commands",
    "sodlib.engine.commands",
    "sodlib.engine.sr_commands",
    "sodlib.augment.commands",
    "sodlib.integrations.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sodlib", description="Small-object detection tools.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try, so that a reader that has gone is handled here
        return code
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (``... | head``): stop quietly, and keep Python from failing to flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
