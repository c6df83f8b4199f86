"""Result records: one record per pass, derived statistics, round trips, atomic writes, the run folder."""

from __future__ import annotations

import math
import os
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

import pytest

from bench.core.errors import UsageError
from bench.core.keys import CaseKey
from bench.core.records import MemoryRecord, PassRecord
from bench.core.results import SCHEMA_VERSION, CaseResult
from bench.core.schema import load_run
from bench.core.stats import summarize
from bench.core.store import RESULTS_FILE, prepare_run_folder, save_run, write_atomic
from tests.conftest import load_json


def test_round_trip_of_a_real_run(small_run: Path, tmp_path: Path) -> None:
    run = load_run(small_run)
    assert run.schema_version == SCHEMA_VERSION and run.state == "complete" and not run.partial
    copy = tmp_path / "copy"
    copy.mkdir()
    save_run(run, copy)
    again = load_run(copy / RESULTS_FILE)
    assert again.to_dict() == run.to_dict()
    # read and written again, the file says what `bench run` wrote: nothing lost on reading
    assert load_json(copy / RESULTS_FILE) == load_json(small_run / RESULTS_FILE)


def test_a_case_keeps_one_record_per_pass_and_derives_the_rest(small_run: Path) -> None:
    data = load_json(small_run / RESULTS_FILE)
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["command_line"].startswith("bench run")
    for raw in data["cases"]:
        assert not {"median_s", "samples_per_s", "iqr_s", "spread", "n", "samples_s"} & set(raw), (
            "derived figures must not be stored beside the records"
        )
        assert raw["status"] == "ok" and raw["passes"]
    run = load_run(small_run)
    step = next(c for c in run.cases if c.key.workload == "train_step" and c.key.batch_size == 32)
    assert [r.index for r in step.passes] == [0, 1, 2]  # three passes, each its own record
    for record in step.passes:
        assert record.calls_per_round is not None and record.calls_per_round >= 1
        assert record.timer and record.min_round_s is not None and record.min_round_s >= 1e-3
        assert (
            record.memory is not None
            and record.memory.host_rss_peak_bytes >= record.memory.host_rss_start_bytes
        )
    assert all(record.contention is not None for record in step.passes)  # each pass says how busy it was
    used = step.clean_passes or step.passes  # the figures rest on the clean passes where there are any
    pooled = [x for r in used for x in r.samples_s]
    assert step.samples_s == pooled and step.n == len(pooled)
    assert step.median_s == statistics.median(pooled) and step.spread == summarize(pooled).spread
    assert step.samples_per_s == pytest.approx(32 / statistics.median(pooled))
    if len(used) >= 2:
        assert step.independent_samples() == [statistics.median(r.samples_s) for r in used]
    epoch = next(
        c
        for c in run.cases
        if c.key.workload == "epoch" and c.key.loader == "resident" and c.key.batch_size == 32
    )
    assert [len(r.samples_s) for r in epoch.passes] == [1, 1]  # two epochs spread over two of three passes
    assert all(r.data_seconds and len(r.data_seconds) == 1 and r.batches == 32 for r in epoch.passes)
    train = next(c for c in run.cases if c.key.workload == "train" and c.key.batch_size == 32)
    assert [(r.index, r.seed) for r in train.runs] == [(0, 0), (1, 1)]  # two runs, each its own seed
    assert all(len(r.test_accuracy or []) == 2 for r in train.runs)
    assert train.final_accuracy == statistics.median(r.test_accuracy[-1] for r in train.runs)


def test_each_pass_keeps_its_own_calibration() -> None:
    """Every pass recalibrates; a case must not report pass 1's calls per round for all of them."""
    key = CaseKey("train_step", "cpu", 64)
    case = CaseResult(key, samples_per_unit=64, passes=[PassRecord(0, [1e-3, 2e-3], calls_per_round=4)])
    case = case.with_pass(PassRecord(1, [3e-3], calls_per_round=9))
    assert [r.calls_per_round for r in case.passes] == [4, 9]
    assert case.n == 3 and case.median_s == 2e-3


def test_memory_peaks_are_the_largest_over_the_passes() -> None:
    def memory(peak: int, own: int) -> MemoryRecord:
        return MemoryRecord(
            100, peak, device_baseline_allocated_bytes=50, device_peak_allocated_bytes=50 + own
        )

    case = CaseResult(
        CaseKey("forward", "cuda:0", 8),
        samples_per_unit=8,
        passes=[PassRecord(0, [1.0], memory=memory(300, 10)), PassRecord(1, [1.0], memory=memory(200, 40))],
    )
    assert case.peak("host_rss_peak_bytes") == 300
    assert case.peak("device_peak_allocated_bytes") == 90
    assert case.own_device_peak_bytes == 40  # above the allocator's baseline, not the absolute 90
    assert case.peak("nvml_used_bytes") is None


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PassRecord(0, []), "at least one sample"),
        (lambda: PassRecord(0, [0.0]), "durations"),
        (lambda: PassRecord(0, [1.0], data_seconds=[1.0, 2.0]), "one value per epoch"),
        (lambda: PassRecord(0, [1.0], test_accuracy=[1.5]), "fractions"),
        (lambda: CaseResult(CaseKey("forward", "cpu", 0), status="error", error="x"), "batch_size"),
        (lambda: CaseResult(CaseKey("forward", "cpu", 8), status="ok"), "at least one pass"),
        (lambda: CaseResult(CaseKey("forward", "cpu", 8), status="oom"), "says why"),
        (lambda: MemoryRecord(-1, 0), "bytes"),
    ],
)
def test_records_refuse_what_cannot_be_a_measurement(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_failed_cases_carry_status_and_no_numbers() -> None:
    case = CaseResult.failure(CaseKey("train_step", "cpu", 10**9), "oom", "can't allocate memory")
    assert case.status == "oom" and case.samples_per_s is None and case.median_s is None and not case.ok
    assert case.failed and case.n == 0


def test_labels_keep_todays_text_and_name_other_dimensions() -> None:
    assert CaseKey("epoch", "cpu", 64, "resident").label() == "epoch [resident] · cpu · batch 64"
    label = CaseKey("train_step", "cpu", 64, mode="compile", threads=2, world_size=4).label()
    assert label == "train_step · cpu · batch 64 · compile · 2 threads · 4 processes"


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_atomic(path, "old")
    with pytest.raises(TypeError):
        write_atomic(path, 12345)  # type: ignore[arg-type]
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"], "no temporary file may be left behind"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_results_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "f", "x")
        write_atomic(tmp_path / "f", "y")  # replacing a file: the new one follows the umask too
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == mode
    assert (tmp_path / "f").read_text() == "y"


def test_unwritable_output_folder_is_refused_before_measuring(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot write results to"):
        prepare_run_folder(blocker / "run")


def test_existing_run_folder_is_not_overwritten(small_run: Path, tmp_path: Path) -> None:
    shutil.copytree(small_run, tmp_path / "run")
    with pytest.raises(UsageError, match="already holds a run"):
        prepare_run_folder(tmp_path / "run")


def test_non_finite_losses_are_saved_as_null(small_run: Path, tmp_path: Path) -> None:
    run = load_run(small_run)
    case = next(case for case in run.cases if case.key.workload == "train")
    diverged = replace(case.passes[0], mean_loss=[math.nan, math.inf])  # what a diverging run produces
    run.store(replace(case, passes=[diverged, *case.passes[1:]]))
    save_run(run, tmp_path)
    assert "NaN" not in (tmp_path / RESULTS_FILE).read_text()
    again = next(case for case in load_run(tmp_path).cases if case.key.workload == "train")
    assert again.passes[0].mean_loss == [None, None]
