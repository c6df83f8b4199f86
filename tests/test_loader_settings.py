"""The chapter's DataLoader's settings as a dimension: workers, pinned memory, persistence, prefetch;
each combination a case of its own, refused or skipped clearly where it cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.analysis.findings import DATA, distrust, findings
from bench.analysis.metrics import case_figures, first_batch_figures
from bench.core.catalog import Status
from bench.core.keys import CaseKey, item_id
from bench.core.plan import Options, plan
from bench.core.records import PassRecord
from bench.core.results import CaseResult
from bench.core.schema import load_run
from tests.conftest import SMALL_REAL_DIR, by_key, run_cli


def test_every_combination_is_a_case_and_only_the_chapters_loader_gets_them() -> None:
    options = Options(devices=("cpu",), batch_sizes=(64,), workloads=("epoch",), loader_workers=(0, 2),
                      pin_memory=(False, True), persistent_workers=True, prefetch_factor=4)  # fmt: skip
    keys = plan(options)
    chapter = [k for k in keys if k.loader == "torchvision"]
    assert [(k.workers, k.pin_memory) for k in chapter] == [(0, False), (0, True), (2, False), (2, True)]
    assert all(k.persistent_workers and k.prefetch_factor == 4 for k in chapter if k.workers)
    assert all(not k.persistent_workers and k.prefetch_factor is None for k in chapter if not k.workers)
    assert [k for k in keys if k.loader == "resident"] == [CaseKey("epoch", "cpu", 64, "resident")]
    labelled = CaseKey("epoch", "cpu", 64, "torchvision", workers=2, pin_memory=True, persistent_workers=True)
    assert labelled.label() == "epoch [torchvision] · cpu · batch 64 · 2 workers · pinned · persistent"
    assert item_id(labelled, 0) == "epoch-torchvision-cpu-64-w2-pin-persist-pass1"
    assert CaseKey("epoch", "cpu", 64, "torchvision").label() == "epoch [torchvision] · cpu · batch 64"


def test_the_first_batch_and_the_epoch_boundary_come_from_the_records() -> None:
    record = PassRecord(0, [10.0, 10.0], data_seconds=[5.0, 5.0], batches=100, first_batch_s=[0.55, 0.45])
    case = CaseResult(
        CaseKey("epoch", "cpu", 64, "torchvision", workers=2), samples_per_unit=6400, passes=[record]
    )
    first, boundary = first_batch_figures(case)
    assert first == pytest.approx(0.5) and boundary == pytest.approx(0.5 - 5.0 / 100)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--loader-workers", "0,x"), "worker count 'x' is not a whole number"),
        (("--loader-workers", "999"), "every count is above the"),
        (("--pin-memory", "maybe"), "--pin-memory takes off and/or on"),
        (
            ("--prefetch-factor", "4"),
            "--prefetch-factor and --persistent-workers apply to DataLoader workers",
        ),
        (("--loader-workers", "1", "--prefetch-factor", "0"), "--prefetch-factor 0 must be at least 1"),
    ],
)
def test_bad_loader_settings_are_refused_before_anything_runs(args: tuple[str, ...], message: str) -> None:
    result = run_cli("run", "--devices", "cpu", "--workloads", "epoch", *args)
    assert result.returncode == 2 and message in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_workers_are_measured_and_named_in_the_findings(tmp_path: Path) -> None:
    """The issue's run on the real slice: every combination measured, each gain from the run's cells."""
    result = run_cli(
        "run", "--devices", "cpu", "--workloads", "epoch", "--loader-workers", "0,1,2,64", "--pin-memory", "off,on",
        "--batch-sizes", "64,500", "--epoch-repeats", "2", "--passes", "1", "--dataset", "fashion-mnist",
        "--data-dir", str(SMALL_REAL_DIR), "--no-download", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    assert "--loader-workers 64 left out" in result.output
    run = load_run(tmp_path / "run")
    cases = by_key(run)
    for batch in (64, 500):
        for workers in (0, 1, 2):
            case = cases[CaseKey("epoch", "cpu", batch, "torchvision", workers=workers)]
            assert case.ok and case_figures(run, case).first_batch_s is not None
            pinned = cases[CaseKey("epoch", "cpu", batch, "torchvision", workers=workers, pin_memory=True)]
            assert pinned.status is Status.SKIPPED and "a CPU case copies nothing" in (pinned.error or "")
    chapter_findings = [f for f in findings(run) if f.bottleneck == DATA and f.case.workers == 0]
    waiting = [  # the chapter's loader waiting half its epoch, on a cell to be trusted (a busy machine: none)
        c.key for c in run.cases
        if c.key.loader == "torchvision" and c.key.workers == 0 and not c.key.pin_memory and c.ok
        and distrust(run, c) is None and (case_figures(run, c).data_share or 0) >= 0.5
    ]  # fmt: skip
    assert [f.case for f in chapter_findings] == waiting
    for finding in chapter_findings:
        base = cases[finding.case]
        for remedy in finding.remedies:
            if remedy.gain is not None:
                other = cases[remedy.case]  # type: ignore[index]
                assert remedy.gain == pytest.approx(other.samples_per_s / base.samples_per_s)  # type: ignore[operator]
        assert {r.what for r in finding.remedies} >= {"device-resident data", "1 workers", "2 workers"}
    assert "epoch boundary" in (tmp_path / "run" / "summary.md").read_text()


def test_an_epoch_at_a_batch_larger_than_the_training_set_is_skipped_saying_why(tmp_path: Path) -> None:
    result = run_cli(
        "run", "--devices", "cpu", "--workloads", "forward,epoch", "--loaders", "resident", "--batch-sizes", "2000",
        "--passes", "1", "--max-time", "0.05", "--dataset", "fashion-mnist", "--data-dir", str(SMALL_REAL_DIR),
        "--no-download", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    cases = by_key(load_run(tmp_path / "run"))
    epoch = cases[CaseKey("epoch", "cpu", 2000, "resident")]
    assert epoch.status is Status.SKIPPED and "larger than the training set (1,000 images)" in (
        epoch.error or ""
    )
    assert cases[CaseKey("forward", "cpu", 2000)].ok  # a step on a fixed batch repeats samples: measured
