"""Tables rendered from a real run: Markdown, CSV, console, and `bench report`."""

from __future__ import annotations

import csv
import io
import re
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

import pytest

from bench.analysis.metrics import data_share, epoch_vs_steps, paired_epoch_ratios
from bench.analysis.training import median_time_to_target, run_time_to_target, time_to_target
from bench.core.keys import CaseKey
from bench.core.records import PassRecord
from bench.core.results import CaseResult
from bench.core.schema import load_run
from bench.render.csvfile import CSV_COLUMNS, csv_text
from bench.render.sections import throughput_table
from bench.render.summary import console_summary, summary_markdown
from bench.render.units import fmt_flops, fmt_mib, fmt_rate, fmt_seconds
from tests.conftest import SMALL_TRAIN, make_run, run_cli


@pytest.mark.parametrize(
    ("value", "text"),
    [(987.0, "987"), (45_600.0, "45.6k"), (1_234_567.0, "1.23M"), (999_960.0, "1M"), (None, "–")],
)
def test_rates_for_people(value: float | None, text: str) -> None:
    assert fmt_rate(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.1e11, "110 GFLOP/s"),
        (4.1e14, "410 TFLOP/s"),  # an H200's TF32 peak: not `410,000 GFLOP/s`
        (7.9e14, "790 TFLOP/s"),
        (999_960e9, "1 PFLOP/s"),  # rounding up reaches the next unit, not `1e+03 TFLOP/s`
        (None, "–"),
    ],
)
def test_flops_for_people(value: float | None, text: str) -> None:
    assert fmt_flops(value) == text


def test_units_for_people() -> None:
    assert fmt_seconds(0.000152) == "0.152 ms"
    assert fmt_seconds(8.2e-6) == "8.2 µs"
    assert fmt_seconds(4.1e-8) == "41 ns"
    assert fmt_seconds(15.43) == "15.4 s"
    assert fmt_mib(3 * 2**20) == "3.0"


def test_summary_markdown_has_every_section_and_case(small_run: Path) -> None:
    run = load_run(small_run)
    text = (small_run / "summary.md").read_text()
    assert text == summary_markdown(run)
    for heading in ("## Throughput", "## Epochs", "## Training to accuracy", "## Memory", "## All cases"):
        assert heading in text
    assert "Fashion-MNIST" in text and "Complete run" in text
    assert "| batch 32 " in text and "| batch 200 " in text
    assert "garbage collected before, and the collector off during" in text
    for case in run.cases:
        assert fmt_rate(case.samples_per_s) in text
    all_cases = text.split("## All cases")[1]
    header = all_cases.strip().splitlines()[0]
    assert all(cell.strip() for cell in header.strip("|").split("|")), f"an empty column header: {header}"


def test_derived_values_come_from_the_pass_records(small_run: Path) -> None:
    run = load_run(small_run)
    epoch = run.case(CaseKey("epoch", "cpu", 32, "resident"))
    assert epoch is not None
    share = data_share(epoch)
    assert share is not None and 0 < share < 1
    assert share == pytest.approx(
        sum(sum(r.data_seconds or []) for r in epoch.passes) / sum(sum(r.samples_s) for r in epoch.passes)
    )
    step = run.case(CaseKey("train_step", "cpu", 32))
    assert step is not None
    # each epoch against the train_steps just before it (its pass) and just after it (the next pass);
    # 1,000 images at batch 32 are 31.25 steps (31 full batches and one of 8 images), not 32
    means = {r.index: statistics.fmean(r.samples_s) for r in step.passes}
    expected = statistics.median(
        seconds / (SMALL_TRAIN / 32 * (means[r.index] + means[r.index + 1]) / 2)
        for r in epoch.passes
        for seconds in r.samples_s
    )
    assert epoch_vs_steps(run, epoch) == pytest.approx(expected)


def test_the_ragged_last_batch_counts_by_its_samples() -> None:
    """1,000 samples at batch 300: 3 full steps and one of 100 samples is 3.33 steps, not 4."""
    step = CaseResult(CaseKey("train_step", "cpu", 300), samples_per_unit=300, passes=[PassRecord(0, [0.01])])
    epoch = CaseResult(
        CaseKey("epoch", "cpu", 300, "resident"),
        samples_per_unit=1000,
        passes=[PassRecord(0, [0.05], batches=4)],
    )
    assert epoch_vs_steps(make_run(step, epoch), epoch) == pytest.approx(0.05 / (1000 / 300 * 0.01))
    assert paired_epoch_ratios(epoch, step) == [pytest.approx(1.5)]


def test_epoch_ratio_pairs_what_it_can_and_falls_back_otherwise(small_run: Path) -> None:
    run = load_run(small_run)
    epoch, step = (
        run.case(CaseKey("epoch", "cpu", 32, "resident")),
        run.case(CaseKey("train_step", "cpu", 32)),
    )
    assert epoch is not None and step is not None
    assert len(paired_epoch_ratios(epoch, step)) == 2
    # the step's second pass failed: only the epoch of pass 0 finds its steps
    only = replace(step, passes=[r for r in step.passes if r.index != 1])
    pairs = paired_epoch_ratios(epoch, only)
    first = next(r for r in epoch.passes if r.index == 0)
    assert pairs == [
        pytest.approx(first.samples_s[0] / (SMALL_TRAIN / 32 * statistics.fmean(step.passes[0].samples_s)))
    ]
    # no pass in common (results from another run, say): the epochs' median over the steps' mean
    elsewhere = replace(step, passes=[replace(r, index=r.index + 10) for r in step.passes])
    run.store(elsewhere)
    assert paired_epoch_ratios(epoch, elsewhere) == []
    assert epoch_vs_steps(run, epoch) == pytest.approx(
        epoch.median_s / (SMALL_TRAIN / 32 * statistics.fmean(step.samples_s))
    )


def test_time_to_target_per_run_and_the_median_over_the_runs_that_reached_it() -> None:
    def run(index: int, accuracies: list[float]) -> PassRecord:
        return PassRecord(index, [2.0] * len(accuracies), seed=index, test_accuracy=accuracies)

    case = CaseResult(
        CaseKey("train", "cpu", 64, "resident"),
        samples_per_unit=1000,
        passes=[run(0, [0.5, 0.81, 0.9]), run(1, [0.7, 0.75, 0.79]), run(2, [0.85, 0.9, 0.9])],
    )
    assert run_time_to_target(case.passes[0], 0.8) == (2, 4.0)
    assert run_time_to_target(case.passes[1], 0.8) == (None, None)
    assert time_to_target(case, 0.8) == (2, [4.0, None, 2.0])  # the run that never got there is counted
    assert median_time_to_target(case, 0.8) == 3.0
    assert case.final_accuracy == 0.9


def test_the_training_table_counts_runs_on_real_data(small_run: Path) -> None:
    text = (small_run / "summary.md").read_text()
    training = text.split("## Training to accuracy")[1].split("## Memory")[0]
    assert "runs reaching 80%" in training
    assert len(re.findall(r"\| [012] of 2 ", training)) == 2  # both batch sizes, two runs each
    assert "not meaningful" not in training


def test_csv_is_one_row_per_case_in_raw_units(small_run: Path) -> None:
    run = load_run(small_run)
    rows = list(csv.DictReader(io.StringIO((small_run / "results.csv").read_text())))
    assert (small_run / "results.csv").read_text() == csv_text(run)
    assert len(set(CSV_COLUMNS)) == len(CSV_COLUMNS), "a column named twice is lost to csv readers"
    assert len(rows) == len(run.cases) and tuple(rows[0]) == CSV_COLUMNS
    by_key = {(r["workload"], r["device"], int(r["batch_size"]), r["loader"] or None): r for r in rows}
    for case in run.cases:
        row = by_key[(case.key.workload, case.key.device, case.key.batch_size, case.key.loader)]
        assert float(row["samples_per_s"]) == pytest.approx(case.samples_per_s)
        assert int(row["host_rss_peak_bytes"]) == case.peak("host_rss_peak_bytes")
        assert int(row["passes"]) == len(case.passes) and row["mode"] == "eager"
        assert row["dataset"] == "fashion-mnist" and row["synthetic"] == "False"


def test_the_console_is_plain_text(small_run: Path) -> None:
    text = console_summary(load_run(small_run))
    assert "**" not in text and "`" not in text
    assert "Dataset: Fashion-MNIST" in text


def test_extra_dimensions_get_a_column_only_when_a_run_varies_them(small_run: Path) -> None:
    run = load_run(small_run)
    plain = throughput_table(run)
    assert "mode" not in plain.splitlines()[0] and "threads" not in plain.splitlines()[0]
    step = next(c for c in run.cases if c.key.workload == "train_step" and c.key.batch_size == 32)
    run.store(replace(step, key=replace(step.key, mode="compile", threads=1)))
    varied = throughput_table(run).splitlines()
    assert "| mode " in varied[0] and "| threads " in varied[0]
    assert any("| compile " in line and "| 1 " in line for line in varied)


def test_report_command_rerenders_the_same_tables(small_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    (copy / "summary.md").unlink()
    (copy / "results.csv").unlink()
    result = run_cli("report", str(copy / "results.json"))
    assert result.returncode == 0, result.output
    assert (copy / "summary.md").read_text() == (small_run / "summary.md").read_text()
    assert (copy / "results.csv").read_text() == (small_run / "results.csv").read_text()
    assert "Throughput (samples/s)" in result.stdout


def test_report_into_a_folder_it_cannot_write_is_a_clear_error(small_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    (copy / "summary.md").unlink()
    (copy / "summary.md").mkdir()  # a directory where the table must go: writing it fails
    result = run_cli("report", str(copy))
    assert result.returncode == 2
    assert "cannot write the tables" in result.stderr and "Traceback" not in result.output
