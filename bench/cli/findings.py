"""`bench findings RUN`: why its setups are slow and what the run measured would help, and nothing else."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

HELP = "print a run's findings: each setup's bottleneck and the measured gain of every remedy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", type=Path, metavar="RUN", help="a run folder, or the results.json inside it"
    )


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from bench.core.schema import load_run
    from bench.render.findings import findings_lines

    lines = findings_lines(load_run(args.target), markup=False)
    print("\n".join(lines) if lines else "No findings: no cell of this run shows a bottleneck by the rules.")
    return 0
