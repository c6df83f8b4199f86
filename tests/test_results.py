"""results.json: round trip, validation of files that are not results, atomic writes, the run folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bench.errors import ResultsFileError, UsageError
from bench.results import (
    RESULTS_FILE,
    SCHEMA_VERSION,
    CaseKey,
    CaseResult,
    load_run,
    prepare_run_folder,
    save_run,
    write_atomic,
)
from bench.stats import summarize


def test_round_trip_of_a_real_run(small_run: Path, tmp_path: Path) -> None:
    run = load_run(small_run)
    assert run.schema_version == SCHEMA_VERSION and run.state == "complete" and not run.partial
    copy = tmp_path / "copy"
    copy.mkdir()
    save_run(run, copy)
    again = load_run(copy / RESULTS_FILE)
    assert again.to_dict() == run.to_dict()


def test_case_fields_the_issue_asks_for(small_run: Path) -> None:
    data = json.loads((small_run / RESULTS_FILE).read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["env"]["command_line"].startswith("bench run")
    assert data["env"]["torch"]["version"] and data["env"]["check"]
    for case in data["cases"]:
        for key in (
            "workload",
            "device",
            "batch_size",
            "loader",
            "status",
            "samples_per_s",
            "median_s",
            "spread",
            "n",
        ):
            assert key in case
        assert case["status"] == "ok"
        assert case["host_rss_peak_bytes"] >= case["host_rss_start_bytes"] > 0
        summary = summarize(case["samples_s"])
        assert case["median_s"] == summary.median and case["n"] == summary.n == len(case["samples_s"])
        assert case["samples_per_s"] == pytest.approx(case["samples_per_call"] / case["median_s"])
    epochs = [c for c in data["cases"] if c["workload"] == "epoch"]
    assert {c["loader"] for c in epochs} == {"torchvision", "resident"}
    trains = [c for c in data["cases"] if c["workload"] == "train"]
    assert trains and all(len(c["test_accuracy"]) == 2 for c in trains)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"schema_version": 1, "run_id": "x", "env": {}, "data', "invalid JSON"),
        ("[1, 2]", "top level is a list"),
        ('{"hello": 1}', "no schema_version"),
        ('{"schema_version": 99}', "schema_version 99"),
        ('{"schema_version": 1, "run_id": "x", "env": {}, "dataset": {}, "options": {}}', "missing 'cases'"),
        (
            '{"schema_version": 1, "run_id": "x", "env": {}, "dataset": {}, "options": {}, '
            '"cases": [{"workload": "forward"}]}',
            "case 0 lacks device",
        ),
    ],
)
def test_files_that_are_not_results_are_refused_with_the_reason(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / RESULTS_FILE
    path.write_text(content)
    with pytest.raises(ResultsFileError) as error:
        load_run(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_binary_and_missing_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ResultsFileError, match="not a results file"):
        load_run(tmp_path / "blob")
    with pytest.raises(ResultsFileError, match="no results file"):
        load_run(tmp_path / "empty-folder-that-does-not-exist")


def test_truncated_copy_of_a_real_file_is_refused(small_run: Path, tmp_path: Path) -> None:
    text = (small_run / RESULTS_FILE).read_text()
    (tmp_path / RESULTS_FILE).write_text(text[: len(text) // 2])
    with pytest.raises(ResultsFileError, match="truncated"):
        load_run(tmp_path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_atomic(path, "old")

    with pytest.raises(TypeError):
        write_atomic(path, 12345)  # type: ignore[arg-type]
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"], "no temporary file may be left behind"


def test_results_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "f", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_unwritable_output_folder_is_refused_before_measuring(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot write results to"):
        prepare_run_folder(blocker / "run")


def test_existing_run_folder_is_not_overwritten(small_run: Path, tmp_path: Path) -> None:
    shutil.copytree(small_run, tmp_path / "run")
    with pytest.raises(UsageError, match="already holds a run"):
        prepare_run_folder(tmp_path / "run")


def test_non_finite_numbers_are_saved_as_null(small_run: Path, tmp_path: Path) -> None:
    run = load_run(small_run)
    train = next(case for case in run.cases if case.workload == "train")
    train.details["mean_loss"] = [float("nan"), float("inf")]
    save_run(run, tmp_path)
    again = load_run(tmp_path)
    assert next(case for case in again.cases if case.workload == "train").details["mean_loss"] == [None, None]


def test_failed_cases_carry_status_and_no_numbers() -> None:
    case = CaseResult.failed(CaseKey("train_step", "cpu", 10**9), "oom", "can't allocate memory")
    assert case.status == "oom" and case.samples_per_s is None and case.median_s is None and not case.ok
