"""The `bench` command: parses arguments and dispatches to a command module. Torch-free at import.

Each command is a module of this package with `HELP`, `add_arguments(parser)` and `run(args, argv)`;
the jobs themselves are in `bench.app`. Exit status: 0 success; 1 a check failed, a case errored, or
`compare --fail-above` found a slowdown; 2 bad input (nothing was measured or changed); 130 a run
stopped by Ctrl-C (its finished cases are saved and rendered).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bench import __version__
from bench.core.errors import BenchError

COMMANDS = ("check", "run", "report", "compare")
EXIT_INTERRUPTED = 130
DESCRIPTION = "Check a PyTorch install and benchmark the textbook MNIST MLP on every device."


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each command's own parser (so an unknown option prints that command's usage)."""
    parser = argparse.ArgumentParser(prog="bench", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {}
    for name in COMMANDS:
        module = importlib.import_module(f"bench.cli.{name}")
        parsers[name] = commands.add_parser(name, help=module.HELP)
        module.add_arguments(parsers[name])
    return parser, parsers


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the command's own usage, not the top level's
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(importlib.import_module(f"bench.cli.{args.command}").run(args, argv))
    except BenchError as error:
        print(f"bench {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"bench {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
