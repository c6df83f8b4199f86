"""`bench report A B ...`: runs from several machines in one table, kept apart and warned about."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

from bench.core.schema import load_run
from bench.core.store import RESULTS_FILE
from bench.render.fleet import columns, differences
from bench.render.tables import rate_cell
from tests.conftest import ROOT, run_cli

V1_FILE = ROOT / "tests" / "data" / "results-v1.json"


def _as_machine(source: Path, target: Path, host: str, cpu: str) -> Path:
    """A copy of a real run, as if another machine had made it (its host and CPU renamed)."""
    data = json.loads(source.read_text() if source.is_file() else (source / RESULTS_FILE).read_text())
    data["env"]["host"], data["env"]["cpu"]["model"] = host, cpu
    target.mkdir(parents=True)
    (target / RESULTS_FILE).write_text(json.dumps(data))
    return target


def test_two_machines_in_one_table_with_both_columns(small_run: Path, tmp_path: Path) -> None:
    a = _as_machine(small_run, tmp_path / "a", "alpha", "Example CPU A")
    b = _as_machine(small_run, tmp_path / "b", "beta", "Example CPU B")
    out = tmp_path / "fleet"
    result = run_cli("report", str(a), str(b), "--out", str(out))
    assert result.returncode == 0, result.output
    table = (out / "fleet.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| workload"))
    assert "alpha · Example CPU A · torch" in header and "beta · Example CPU B · torch" in header
    run = load_run(a)
    step = next(c for c in run.cases if c.key.workload == "train_step" and c.key.batch_size == 32)
    row = next(line for line in table.splitlines() if line.startswith("| train_step ") and "| 32 " in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[4:] == [rate_cell(step), rate_cell(step)]  # each machine's column holds its own figure
    rows = list(csv.DictReader(io.StringIO((out / "fleet.csv").read_text())))
    assert {r["host"] for r in rows} == {"alpha", "beta"} and len(rows) == 2 * len(run.cases)
    ours = next(
        r for r in rows if r["host"] == "alpha" and r["workload"] == "train_step" and r["batch_size"] == "32"
    )
    assert float(ours["samples_per_s"]) == step.samples_per_s
    assert "no warning" not in result.stdout and "warning:" not in result.stdout  # same data, same settings


def test_one_machine_with_other_settings_stays_apart_and_differences_are_warned(
    small_run: Path, tmp_path: Path
) -> None:
    shutil.copytree(small_run, tmp_path / "same")
    runs = [load_run(small_run), load_run(tmp_path / "same"), load_run(V1_FILE)]
    runs[1].run_id = "other1"
    named = columns(runs)
    assert len({c.name for c in named}) == len(named) == 3  # the two from one host each name their run
    assert any(c.name.endswith("· run other1") for c in named)
    warnings = differences(runs)
    assert any("different data" in line and "60,000 images" in line for line in warnings)
    assert any(
        line.startswith("option passes differs") or line.startswith("option epochs differs")
        for line in warnings
    )


def test_a_fleet_report_of_a_missing_run_is_refused(small_run: Path, tmp_path: Path) -> None:
    result = run_cli("report", str(small_run), str(tmp_path / "nowhere"), "--out", str(tmp_path / "fleet"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "fleet").exists()
