"""`bench report`: a run's tables rendered again; with several runs, one cross-machine (fleet) table."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bench.cli.args import REDACT_HELP, folder_path

HELP = "re-render the tables of a run; with several runs (from several machines), one table for them all"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets", type=Path, nargs="+", metavar="RUN", help="run folders, or the results.json inside them"
    )
    parser.add_argument(
        "--plot", action="store_true", help="also draw PNG plots (needs matplotlib) (default: off)"
    )
    parser.add_argument("--redact", action="store_true", help=REDACT_HELP)
    parser.add_argument(
        "--out",
        type=folder_path,
        help="with several runs: the folder for fleet.md, fleet.csv (and fleet.png) (default: "
        "results/fleet-<date>-<id>/)",
    )


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from bench import reading

    return reading.report_job(args.targets, args.plot, args.out, redact=args.redact)
