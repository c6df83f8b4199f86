"""The package's structure: a case has one text form, the CSV carries what the summary shows, and
the reading layers start without torch."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from dataclasses import replace

import pytest

from bench.analysis.metrics import figures
from bench.core.keys import CaseKey, item_id, label, line_label
from bench.core.records import PassRecord
from bench.core.results import CaseResult, Run
from bench.core.schema import load_run
from bench.render.csvfile import csv_text
from bench.render.plots import plot_lines
from bench.render.sections import CASE_TABLES, FIGURES_SHOWN
from bench.render.summary import summary_markdown
from bench.render.tables import Cell, sorted_cases
from tests.conftest import REFERENCE_RUNS, ROOT, make_run

EMPTY_CELLS = ("", "–", "n/a")


def _case(key: CaseKey, seconds: float = 0.01) -> CaseResult:
    return CaseResult(key, samples_per_unit=key.batch_size, passes=[PassRecord(0, [seconds] * 5)])


def _csv_rows(run: Run) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(csv_text(run))))


def test_reading_layers_import_without_torch() -> None:
    """`bench report`, `compare` and `fleet` start in a fraction of a second: nothing they import at
    import time pulls in torch (environment facts import it lazily, inside the probes)."""
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for layer in ("core", "analysis", "render", "cli", "env")
        for path in (ROOT / "bench" / layer).glob("*.py")
    )
    script = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nprint('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", f"one of {modules} imports torch at import time"


def test_a_made_up_dimension_value_shows_everywhere_a_case_is_named() -> None:
    """Values the harness never made (a mode it does not know, 7 threads, 3 copies) read through the
    one declaration of the dimensions: label, pytest id, plot line, CSV and summary all show them."""
    key = CaseKey("train_step", "cpu", 64, mode="zeta-mode", threads=7, side_by_side=3)
    run = make_run(_case(CaseKey("train_step", "cpu", 64)), _case(key))
    assert label(key) == "train_step · cpu · batch 64 · zeta-mode · 7 threads · 3 copies side by side"
    assert item_id(key, 1) == "train_step-step-cpu-64-zeta-mode-threads7-sbs3-pass2"
    assert line_label(key) == "cpu · zeta-mode · 7 threads · 3 copies side by side" in plot_lines(run.cases)
    row = next(r for r in _csv_rows(run) if r["mode"] == "zeta-mode")
    assert (row["threads"], row["side_by_side"], row["world_size"]) == ("7", "3", "1")
    summary = summary_markdown(run)
    assert "zeta-mode" in summary and "| side by side " in summary  # the varied dimensions get columns


def test_one_process_and_its_side_by_side_copy_are_told_apart() -> None:
    solo = CaseKey("train_step", "cpu", 64, threads=1)
    copies = replace(solo, side_by_side=2)
    ranks = replace(solo, world_size=2)
    assert len({item_id(k, 0) for k in (solo, copies, ranks)}) == 3
    assert len({line_label(k) for k in (solo, copies, ranks)}) == 3
    run = make_run(_case(solo), _case(copies), _case(ranks))
    assert len(plot_lines(run.cases)) == 3


@pytest.mark.parametrize("folder", REFERENCE_RUNS, ids=lambda p: str(p.relative_to(ROOT / "results")))
def test_every_figure_a_table_shows_is_in_the_csv(folder: object) -> None:
    """For each committed run: wherever a table's cell shows a figure, that case's CSV row has it."""
    run = load_run(folder)  # type: ignore[arg-type]
    rows = {(r["workload"], r["loader"], r["device"], r["batch_size"], r["mode"], r["threads"],
             r["world_size"], r["side_by_side"]): r for r in _csv_rows(run)}  # fmt: skip
    cases = sorted_cases(run)
    by_key = figures(run, cases)
    checked = 0
    for case in cases:
        k = case.key
        row = rows[(k.workload, k.loader or "", k.device, str(k.batch_size), k.mode, "" if k.threads is None
                    else str(k.threads), str(k.world_size), str(k.side_by_side))]  # fmt: skip
        for table, shows, columns in CASE_TABLES:
            if not shows(case):
                continue
            for column in columns:
                shown = str(column.value(Cell(case, by_key[k], run))).strip()
                if column.figure is None or shown in EMPTY_CELLS:
                    continue
                checked += 1
                assert row[column.figure] != "", f"{table} shows {column.header}={shown} for {k.label()}"
        for figure in (*FIGURES_SHOWN["throughput"], *FIGURES_SHOWN["speedup"], *FIGURES_SHOWN["train"]):
            if getattr(by_key[k], figure) not in (None, []):
                assert row[figure] != "", f"{figure} of {k.label()}"
    assert checked > len(cases), "the check compared next to nothing"
