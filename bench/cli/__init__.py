"""The `bench` command: parses arguments and dispatches to a command module. Torch-free at import.

Each command is a module of this package with `HELP`, `add_arguments(parser)` and `run(args, argv)`;
the jobs themselves are in `bench.app`. Exit status: 0 success; 1 a check failed, a case errored, or
`compare --fail-above` found a slowdown; 2 bad input (nothing was measured or changed); 70 an
unexpected error, a bug (one line on stderr names it and the crash log that holds its traceback);
128 + the signal's number for a command stopped by SIGINT (130), SIGHUP (129) or SIGTERM (143): a
run saves and renders its finished cases first (bench.core.stopping); 141 the reader of the
output went away (`bench check | head -c 10`): the rest of the output is dropped without a word,
what the command writes to files is written all the same, and 141 is what a shell reports for a
command that SIGPIPE ended.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import __version__
from bench.core.crash import note_run_folder, noted_run_folder, write_crash_log
from bench.core.errors import BenchError, one_line
from bench.core.stopping import interrupt_of, signals_interrupt

COMMANDS = ("check", "run", "report", "compare", "findings", "redact", "ab")
EXIT_CRASH = 70  # EX_SOFTWARE: an internal error
EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM 143, SIGHUP 129
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
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
    """`bench ...`: the exit status; never a traceback (see the module's docstring for the statuses)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _replace_unencodable()
    try:
        with signals_interrupt():  # SIGTERM and SIGHUP end every command as Ctrl-C does
            return _guarded(argv)
    except KeyboardInterrupt as error:  # while parsing, or while the message of an earlier one was printed
        return _interrupted("bench", error)


def _guarded(argv: list[str]) -> int:
    command, args = "?", None
    try:
        parser, commands = build_parser()
        args, unknown = parser.parse_known_args(argv)
        command = args.command
        if unknown:  # the command's own usage, not the top level's
            commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
        try:
            code = int(importlib.import_module(f"bench.cli.{args.command}").run(args, argv))
        except BenchError as error:
            print(f"bench {args.command}: error: {error}", file=sys.stderr)
            code = error.exit_code
        except KeyboardInterrupt as error:
            code = _interrupted(f"bench {args.command}", error)
        sys.stdout.flush()  # a closed pipe shows here, inside the guard, not in the interpreter's exit
        return code
    except SystemExit:
        # argparse's --help, --version and usage errors: their output may meet a closed pipe too
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            return _reader_gone()
        raise
    except BrokenPipeError:
        return _reader_gone()
    except Exception as error:  # not SystemExit (argparse's own exits) nor KeyboardInterrupt
        out = getattr(args, "out", None)
        if noted_run_folder() is None and command == "run" and isinstance(out, Path) and out.is_dir():
            note_run_folder(out)
        return _crashed(command, argv, error)


def _interrupted(who: str, error: KeyboardInterrupt) -> int:
    stop = interrupt_of(error)
    try:
        print(f"{who}: interrupted by {stop.name}", file=sys.stderr)
    except OSError:  # no terminal any more (SIGHUP)
        pass
    return stop.exit_code


def _replace_unencodable() -> None:
    """A character the terminal cannot show (a non-ASCII folder under LANG=C) is replaced, not fatal."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):  # not a text stream of the usual kind
            pass


def _reader_gone() -> int:
    """stdout's reader closed the pipe: what is still buffered goes to /dev/null, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no stdout to redirect
        pass
    return EXIT_BROKEN_PIPE


def _crashed(command: str, argv: Sequence[str], error: Exception) -> int:
    """One line naming the error and the crash log; the traceback goes into the log."""
    log = write_crash_log(error, argv, __version__)
    where = f"the traceback is in {log} (please report it)" if log else "no crash log could be written"
    try:
        print(f"bench {command}: internal error: {one_line(error, 300)}; {where}", file=sys.stderr)
        if log is None:  # nowhere to keep it: the traceback is better on the terminal than lost
            import traceback

            traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    except OSError:  # stderr gone too
        pass
    return EXIT_CRASH
