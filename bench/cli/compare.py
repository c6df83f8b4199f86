"""`bench compare A B`: B against A, case by case, with intervals; `--fail-above` makes it a CI gate."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bench.analysis.compare import MIN_EFFECT
from bench.cli.args import finite_float
from bench.core.errors import UsageError

HELP = "compare two runs case by case (B relative to A)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", type=Path, help="run A: folder or results.json (the reference)")
    parser.add_argument("candidate", type=Path, help="run B: folder or results.json")
    parser.add_argument(
        "--fail-above",
        type=finite_float,
        metavar="PCT",
        help="exit 1 if any case is significantly slower than A by more than PCT percent (default: never)",
    )
    parser.add_argument(
        "--min-effect",
        type=finite_float,
        metavar="PCT",
        default=MIN_EFFECT * 100,
        help="the smallest change called slower or faster, either way, in percent; raise it on shared "
        "machines whose speed differs between processes (default: %(default)g, or the runs' noise level "
        "when that is larger)",
    )
    parser.add_argument(
        "--out", type=Path, help="also write the comparison as Markdown to this file (default: no)"
    )


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from bench import reading

    if args.fail_above is not None and args.fail_above < 0:
        raise UsageError(f"--fail-above {args.fail_above:g} must be a percentage of at least 0")
    if not 0 <= args.min_effect < 1000:
        raise UsageError(f"--min-effect {args.min_effect:g} must be a percentage from 0 to below 1000")
    return reading.compare_job(args.baseline, args.candidate, args.min_effect, args.fail_above, args.out)
