"""Contention targets with real CPU hogs: a busy machine marks nearly every case, a quiet one
nearly none, and a hog started halfway marks only the cases after it. Needs a quiet machine to
start with (the `targets` session)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.core.schema import load_run
from tests.conftest import run_cli

pytestmark = pytest.mark.targets

ARGS = ("--workloads", "forward,forward_backward,train_step", "--batch-sizes", "64,1024", "--passes", "2",
        "--max-time", "2", "--dataset", "synthetic")  # fmt: skip


@contextmanager
def hogs(count: int) -> Iterator[None]:
    """`count` processes that spin on a CPU each until the block ends."""
    spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for process in spinning:
            process.kill()
            process.wait()


def _contended_share(out: Path) -> float:
    run = load_run(out)
    assert run.cases and all(case.ok for case in run.cases)
    return sum(case.contended for case in run.cases) / len(run.cases)


def test_two_hogs_mark_nearly_every_case_and_a_quiet_machine_nearly_none(tmp_path: Path) -> None:
    data = ("--data-dir", str(tmp_path / "data"))
    quiet = run_cli("run", "--devices", "cpu", *ARGS, *data, "--out", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.output
    with hogs(2):
        busy = run_cli("run", "--devices", "cpu", *ARGS, *data, "--out", str(tmp_path / "busy"))
    assert busy.returncode == 0, busy.output
    quiet_share, busy_share = _contended_share(tmp_path / "quiet"), _contended_share(tmp_path / "busy")
    print(f"contended cases: {quiet_share:.0%} quiet, {busy_share:.0%} with two CPU hogs")
    assert busy_share >= 0.9 and quiet_share <= 0.1
    assert "CONTENDED:" in (tmp_path / "busy" / "summary.md").read_text()


def test_a_hog_started_halfway_marks_the_cases_after_it(tmp_path: Path) -> None:
    """One pass over six cases; the hogs start once the third case is on disk."""
    out = tmp_path / "run"
    args = [*ARGS[:4], "--passes", "1", "--max-time", "3", "--dataset", "synthetic"]
    command = [sys.executable, "-m", "bench", "run", "--devices", "cpu", *args,
               "--data-dir", str(tmp_path / "data"), "--out", str(out)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started: dict[str, float] = {}
    try:
        while process.poll() is None and "at" not in started:
            if (out / "results.json").exists():
                try:
                    if len(load_run(out).cases) >= 3:
                        started["at"] = time.time()
                except Exception:  # caught mid-write: read again
                    pass
            time.sleep(0.05)
        with hogs(2):
            process.wait(timeout=300)
    finally:
        process.kill()
    assert "at" in started, "the run ended before the hogs could start"
    cases = load_run(out).cases
    before, after = cases[:3], cases[4:]  # the fourth may have been halfway when they started
    assert not any(case.contended for case in before), [c.key.label() for c in before if c.contended]
    assert all(case.contended for case in after), [c.key.label() for c in after if not c.contended]


def test_passes_contended_by_hogs_are_measured_again_once_they_stop(tmp_path: Path) -> None:
    """`--retry-contended 1`: the hogs run through the planned pass and stop before the retry slots."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "bench", "run", "--devices", "cpu", "--workloads", "forward,train_step",
               "--batch-sizes", "64,1024", "--passes", "1", "--max-time", "2", "--dataset", "synthetic",
               "--retry-contended", "1", "--data-dir", str(tmp_path / "data"), "--out", str(out)]  # fmt: skip
    with hogs(2):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            planned_done = False
            while process.poll() is None and not planned_done:
                try:
                    planned_done = (out / "results.json").exists() and len(load_run(out).cases) >= 4
                except Exception:  # caught mid-write: read again
                    pass
                time.sleep(0.05)
        except BaseException:
            process.kill()
            raise
    try:
        assert process.wait(timeout=300) == 0
    finally:
        process.kill()
    cases = load_run(out).cases
    first_contended = [case for case in cases if case.passes[0].contended]
    assert len(first_contended) >= 3, "the hogs did not contend the planned pass"
    for case in first_contended:
        assert len(case.passes) == 2, case.key.label()  # both records kept
    retried_clean = [case for case in first_contended if not case.passes[1].contended]
    assert retried_clean and all(not case.contended for case in retried_clean)
    for case in retried_clean:
        assert case.samples_s == case.passes[1].samples_s  # the figure rests on the clean pass
