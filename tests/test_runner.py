"""A sweep survives its cases: out-of-memory, errors, SIGKILL and Ctrl-C cost nothing already measured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.results import load_run
from bench.runner import Item, Options, epochs_in_pass, plan, schedule
from tests.conftest import ROOT, run_cli, shadow_package

FAST = ("--devices", "cpu", "--passes", "1", "--max-time", "0.05", "--dataset", "synthetic")


def test_plan_and_schedule_order() -> None:
    options = Options(
        devices=("cpu",), batch_sizes=(8, 16), workloads=("forward", "epoch", "train"), passes=2
    )
    cases = plan(options)
    labels = [(c.workload, c.loader, c.batch_size) for c in cases]
    assert labels == [
        ("forward", None, 8), ("forward", None, 16),
        ("epoch", "torchvision", 8), ("epoch", "torchvision", 16),
        ("epoch", "resident", 8), ("epoch", "resident", 16),
        ("train", "resident", 8), ("train", "resident", 16),
    ]  # fmt: skip
    items = schedule(cases, passes=2, epoch_repeats=3)
    first = [Item(c, 0, 2 if c.workload == "epoch" else 0) for c in cases]
    second = [Item(c, 1, 1 if c.workload == "epoch" else 0) for c in cases if c.workload != "train"]
    assert items == first + second  # epochs spread 2 + 1 over the passes, training runs once
    assert [epochs_in_pass(5, 3, index) for index in range(3)] == [2, 2, 1]
    assert [epochs_in_pass(1, 3, index) for index in range(3)] == [1, 0, 0]


def test_a_batch_too_large_to_allocate_is_oom_and_the_sweep_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "run", *FAST, "--passes", "2", "--workloads", "forward,train_step", "--batch-sizes", "16,300000000,32",
        "--data-dir", str(tmp_path / "data"), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    assert result.stderr.count("skipped: OOM in an earlier pass") == 2  # not tried again in pass 2
    run = load_run(out)
    statuses = {(c.workload, c.batch_size): c.status for c in run.cases}
    assert statuses == {
        ("forward", 16): "ok", ("forward", 300000000): "oom", ("forward", 32): "ok",
        ("train_step", 16): "ok", ("train_step", 300000000): "oom", ("train_step", 32): "ok",
    }  # fmt: skip
    oom = next(c for c in run.cases if c.status == "oom")
    assert "allocate" in (oom.error or "") and oom.samples_per_s is None
    summary = (out / "summary.md").read_text()
    assert "| OOM" in summary and "nan" not in summary.lower()
    assert not run.partial


def test_an_error_in_one_case_is_recorded_and_the_rest_still_run(tmp_path: Path) -> None:
    """A torchvision without `datasets` breaks the chapter's loader only; the resident loader still runs."""
    env = shadow_package(tmp_path / "fake", "torchvision", "__version__ = '0.29.1'\n")
    out = tmp_path / "run"
    result = run_cli(
        "run",
        *FAST,
        "--workloads",
        "epoch",
        "--batch-sizes",
        "500",
        "--epoch-repeats",
        "1",
        "--data-dir",
        str(tmp_path / "data"),
        "--out",
        str(out),
        env=env,
    )
    assert result.returncode == 1, result.output  # an `error` case makes the run exit 1
    run = load_run(out)
    statuses = {c.loader: c.status for c in run.cases}
    assert statuses == {"torchvision": "error", "resident": "ok"}
    assert "datasets" in (next(c for c in run.cases if c.status == "error").error or "")
    assert "error" in (out / "summary.md").read_text()


def _start_long_run(out: Path, data: Path) -> subprocess.Popen[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable, "-m", "bench", "run", "--devices", "cpu", "--passes", "1", "--max-time", "0.6",
            "--workloads", "forward,forward_backward,train_step", "--batch-sizes", "8,16,32,64,128,256",
            "--dataset", "synthetic", "--data-dir", str(data), "--out", str(out),
        ],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_case_start(process: subprocess.Popen[str], number: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        if line.lstrip().startswith(f"[{number:>3}/"):
            return
    process.kill()
    pytest.fail(f"case {number} never started")


def test_sigkill_leaves_every_finished_case_readable(tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = _start_long_run(out, tmp_path / "data")
    _wait_for_case_start(process, 4)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    run = load_run(out)
    assert run.partial and run.state == "running"
    assert len(run.cases) == 3 and all(case.ok for case in run.cases)
    report = run_cli("report", str(out))
    assert report.returncode == 0, report.output
    assert "PARTIAL RUN" in report.stdout and "3 of 18 planned cases" in report.stdout
    assert "PARTIAL RUN" in (out / "summary.md").read_text()


def test_ctrl_c_finishes_the_current_case_then_writes_the_tables(tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = _start_long_run(out, tmp_path / "data")
    _wait_for_case_start(process, 3)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "stopping after the current case" in stderr
    run = load_run(out)
    assert run.state == "interrupted" and run.partial
    assert len(run.cases) == 3 and all(case.ok for case in run.cases)  # case 3 was finished, not dropped
    summary = (out / "summary.md").read_text()
    assert "PARTIAL RUN" in summary and "3 of 18" in summary
    assert "PARTIAL RUN" in stdout
