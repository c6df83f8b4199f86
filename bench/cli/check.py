"""`bench check`: the install check, as a table or JSON; exit 0 only when nothing failed."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

HELP = "check the install: versions, devices, real computations on each"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the facts and verdicts as JSON (default: a table)"
    )
    parser.add_argument(
        "--require",
        action="append",
        choices=["cuda"],
        default=[],
        help="make a missing capability a failure: `cuda` fails without a usable CUDA device (default: none)",
    )


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from bench import app
    from bench.core.envvars import check_environment

    check_environment()  # the facts read OMP_NUM_THREADS, CUDA_VISIBLE_DEVICES, BENCH_IMAGE, ...

    return app.check_job(args.json, args.require)
