"""Tables rendered from a real run: Markdown, CSV, console, and `bench report`."""

from __future__ import annotations

import csv
import io
import itertools
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

import pytest

from bench.report import (
    CSV_COLUMNS,
    csv_text,
    data_share,
    epoch_vs_steps,
    fmt_mib,
    fmt_rate,
    fmt_seconds,
    index_cases,
    paired_epoch_ratios,
    summary_markdown,
    time_to_target,
)
from bench.results import load_run
from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("value", "text"), [(987.0, "987"), (45_600.0, "45.6k"), (1_234_567.0, "1.23M"), (None, "–")]
)
def test_rates_for_people(value: float | None, text: str) -> None:
    assert fmt_rate(value) == text


def test_units_for_people() -> None:
    assert fmt_seconds(0.000152) == "0.152 ms"
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
    assert text.count("| train_step ") >= 1
    for case in run.cases:
        assert fmt_rate(case.samples_per_s) in text


def test_derived_values_come_from_the_raw_samples(small_run: Path) -> None:
    run = load_run(small_run)
    cases = index_cases(run)
    epoch = cases[("epoch", "cpu", 32, "resident")]
    share = data_share(epoch)
    assert share is not None and 0 < share < 1
    assert share == pytest.approx(sum(epoch.details["data_seconds"]) / sum(epoch.samples_s))
    step = cases[("train_step", "cpu", 32, None)]
    ratio = epoch_vs_steps(epoch, cases)
    assert epoch.details["batches_per_epoch"] == 32  # 1,000 images: 31 full batches and a ragged one
    # each epoch against the train_steps of its own pass (samples_s split by the rounds of each pass)
    assert step.details["pass_index"] == [0, 1, 2] and epoch.details["pass_index"] == [0, 1]
    bounds = list(itertools.accumulate(step.details["pass_rounds"], initial=0))
    assert bounds[-1] == len(step.samples_s)
    pass_means = [statistics.fmean(step.samples_s[a:b]) for a, b in itertools.pairwise(bounds)]
    expected = statistics.median(
        e / (32 * pass_means[p]) for e, p in zip(epoch.samples_s, [0, 1], strict=True)
    )
    assert ratio == pytest.approx(expected)
    train = cases[("train", "cpu", 32, "resident")]
    epochs, seconds = time_to_target(train)
    if epochs is not None:
        assert train.test_accuracy[epochs - 1] >= train.details["target_accuracy"]
        assert seconds == pytest.approx(sum(train.samples_s[:epochs]))


def test_epoch_ratio_pairs_what_it_can_and_falls_back_otherwise(small_run: Path) -> None:
    cases = index_cases(load_run(small_run))
    epoch, step = cases[("epoch", "cpu", 32, "resident")], cases[("train_step", "cpu", 32, None)]
    unpaired = epoch.median_s / (32 * statistics.fmean(step.samples_s))
    assert len(paired_epoch_ratios(epoch, step, 32)) == 2
    # the step's second pass failed (merged_with keeps only what was measured): pass 0 alone pairs
    rounds = step.details["pass_rounds"]
    kept = [0, 2]
    only = replace(
        step,
        samples_s=step.samples_s[: rounds[0]] + step.samples_s[rounds[0] + rounds[1] :],
        details={**step.details, "pass_index": kept, "pass_rounds": [rounds[0], rounds[2]]},
    )
    pairs = paired_epoch_ratios(epoch, only, 32)
    assert pairs == [pytest.approx(epoch.samples_s[0] / (32 * statistics.fmean(step.samples_s[: rounds[0]])))]
    # results written before passes were recorded, or hand-edited nonsense: the unpaired ratio
    for details in (
        {},
        {"pass_index": [0, 1, 2], "pass_rounds": ["x", 1, 1]},
        {"pass_index": [0], "pass_rounds": [1]},
    ):
        old_step = replace(step, details={**step.details, **details} if details else {})
        assert paired_epoch_ratios(epoch, old_step, 32) == []
        with_old = {**cases, ("train_step", "cpu", 32, None): old_step}
        assert epoch_vs_steps(epoch, with_old) == pytest.approx(unpaired)


def test_csv_is_one_row_per_case_in_raw_units(small_run: Path) -> None:
    run = load_run(small_run)
    rows = list(csv.DictReader(io.StringIO((small_run / "results.csv").read_text())))
    assert (small_run / "results.csv").read_text() == csv_text(run)
    assert len(rows) == len(run.cases) and tuple(rows[0]) == CSV_COLUMNS
    by_key = {(r["workload"], r["device"], int(r["batch_size"]), r["loader"] or None): r for r in rows}
    for case in run.cases:
        row = by_key[(case.workload, case.device, case.batch_size, case.loader)]
        assert float(row["samples_per_s"]) == pytest.approx(case.samples_per_s)
        assert int(row["host_rss_peak_bytes"]) == case.host_rss_peak_bytes
        assert row["dataset"] == "fashion-mnist" and row["synthetic"] == "False"


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


def test_report_refuses_a_file_that_is_not_results(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{not json")
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 2
    assert "is not a results file" in result.stderr and "Traceback" not in result.output
