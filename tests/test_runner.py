"""A sweep survives its cases: out-of-memory, errors, SIGKILL and Ctrl-C cost nothing already measured."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.core.keys import CaseKey
from bench.core.plan import Item, Options, plan, schedule, share_of_pass
from bench.core.schema import load_run
from bench.engine.progress import estimate_remaining, format_duration
from tests.conftest import ROOT, run_cli, shadow_package

FAST = ("--devices", "cpu", "--passes", "1", "--max-time", "0.05", "--dataset", "synthetic")


def test_plan_and_schedule_order() -> None:
    options = Options(
        devices=("cpu",), batch_sizes=(8, 16), workloads=("forward", "epoch", "train"), passes=2,
        epoch_repeats=3, train_runs=3,
    )  # fmt: skip
    cases = plan(options)
    labels = [(c.workload, c.loader, c.batch_size) for c in cases]
    assert labels == [
        ("forward", None, 8), ("forward", None, 16),
        ("epoch", "torchvision", 8), ("epoch", "torchvision", 16),
        ("epoch", "resident", 8), ("epoch", "resident", 16),
        ("train", "resident", 8), ("train", "resident", 16),
    ]  # fmt: skip
    items = schedule(cases, options)
    first = [Item(c, 0, 0 if c.workload == "forward" else 2, 0) for c in cases]
    second = [
        Item(c, 1, 0 if c.workload == "forward" else 1, 0 if c.workload == "forward" else 2) for c in cases
    ]
    assert items == first + second  # epochs and runs spread 2 + 1 over the passes; runs numbered on
    assert [share_of_pass(5, 3, index) for index in range(3)] == [2, 2, 1]
    assert [share_of_pass(1, 3, index) for index in range(3)] == [1, 0, 0]


def test_threads_and_modes_multiply_the_cpu_cases_only() -> None:
    options = Options(
        devices=("cpu", "cuda:0"), batch_sizes=(64,), workloads=("train_step",), modes=("eager", "compile"),
        threads=(1, 2),
    )  # fmt: skip
    keys = plan(options)
    assert [(k.device, k.threads, k.mode) for k in keys] == [
        ("cpu", 1, "eager"), ("cpu", 1, "compile"), ("cpu", 2, "eager"), ("cpu", 2, "compile"),
        ("cuda:0", None, "eager"), ("cuda:0", None, "compile"),
    ]  # fmt: skip


def test_the_estimate_of_what_is_left_prices_items_by_what_they_cost() -> None:
    fast, slow = CaseKey("forward", "cpu", 64), CaseKey("epoch", "cpu", 64, "resident")
    finished = [(Item(fast, 0), 1.0), (Item(slow, 0, repeats=2), 20.0)]
    remaining = [Item(fast, 1), Item(slow, 1, repeats=1), Item(CaseKey("train_step", "cpu", 8), 0)]
    # the same case's earlier cost, per repeat for epochs; an unseen workload costs the average item
    assert estimate_remaining(finished, remaining) == pytest.approx(1.0 + 10.0 + 10.5)
    assert estimate_remaining([], remaining) is None
    assert (
        format_duration(42.4) == "0:42"
        and format_duration(725) == "12:05"
        and format_duration(3723) == "1:02:03"
    )


@pytest.mark.slow
def test_a_batch_too_large_to_allocate_is_oom_and_the_sweep_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "run", *FAST, "--passes", "2", "--workloads", "forward,train_step", "--batch-sizes", "16,300000000,32",
        "--data-dir", str(tmp_path / "data"), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    assert result.stderr.count("skipped: OOM in an earlier pass") == 2  # not tried again in pass 2
    assert re.search(r"\[  1/12\] 0:\d\d elapsed · forward · cpu · batch 16 \(pass 1/2\)", result.stderr)
    assert re.search(r"\[  2/12\] 0:\d\d elapsed, about \d+:\d\d left · ", result.stderr), result.stderr
    run = load_run(out)
    statuses = {(c.key.workload, c.key.batch_size): c.status for c in run.cases}
    assert statuses == {
        ("forward", 16): "ok", ("forward", 300000000): "oom", ("forward", 32): "ok",
        ("train_step", 16): "ok", ("train_step", 300000000): "oom", ("train_step", 32): "ok",
    }  # fmt: skip
    oom = next(c for c in run.cases if c.status == "oom")
    assert "allocate" in (oom.error or "") and oom.samples_per_s is None
    summary = (out / "summary.md").read_text()
    assert "| OOM" in summary and "nan" not in summary.lower()
    assert not run.partial


@pytest.mark.slow
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
    statuses = {c.key.loader: c.status for c in run.cases}
    assert statuses == {"torchvision": "error", "resident": "ok"}
    assert "datasets" in (next(c for c in run.cases if c.status == "error").error or "")
    assert "error" in (out / "summary.md").read_text()


def _start_long_run(out: Path, data: Path) -> subprocess.Popen[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable, "-m", "bench", "run", "--devices", "cpu", "--passes", "1", "--max-time", "0.6",
            "--workloads", "forward,forward_backward,train_step", "--batch-sizes", "8,16,32,64,128,256",
            "--dataset", "synthetic", "--data-dir", str(data), "--out", str(out), "--retry-contended", "0",
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


@pytest.mark.slow
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
    assert "**" not in report.stdout  # the console is plain text
    assert "PARTIAL RUN" in (out / "summary.md").read_text()


@pytest.mark.slow
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
