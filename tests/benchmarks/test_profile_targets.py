"""`--profile` profiles after the timed passes, so a profiled run's figures stay within the noise of an
unprofiled one: two runs side by side in time, compared by `bench compare`'s own statistics."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.analysis.compare import SAME, compare_runs
from bench.core.schema import load_run
from tests.conftest import run_cli

pytestmark = pytest.mark.targets

ARGS = ("--devices", "cpu", "--dataset", "synthetic", "--workloads", "forward,train_step", "--batch-sizes", "64,1024",
        "--passes", "3", "--max-time", "1.5")  # fmt: skip


def test_a_profiled_runs_figures_are_those_of_an_unprofiled_one(tmp_path: Path) -> None:
    data = ("--data-dir", str(tmp_path / "data"))
    plain = run_cli("run", *ARGS, *data, "--out", str(tmp_path / "plain"))
    profiled = run_cli("run", *ARGS, *data, "--profile", "--out", str(tmp_path / "profiled"))
    assert plain.returncode == 0 and profiled.returncode == 0, plain.output + profiled.output
    comparison = compare_runs(load_run(tmp_path / "plain"), load_run(tmp_path / "profiled"), min_effect=0.10)
    for row in comparison.rows:
        print(f"{row.key.label()}: profiled against plain {row.change_percent:+.1f}% ({row.verdict})")
    assert all(row.verdict == SAME for row in comparison.rows), [r.key.label() for r in comparison.rows]
