"""`bench redact DIR`: an existing run folder made safe to share (bench.core.redact says what changes)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

HELP = "replace host, user, home paths, other processes, git identity and GPU ids in a run folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", type=Path, metavar="RUN", help="a run folder, or the results.json inside it"
    )


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from bench import reading
    from bench.core.envvars import check_environment

    check_environment()  # BENCH_REDACT_SALT among them
    return reading.redact_job(args.target)
