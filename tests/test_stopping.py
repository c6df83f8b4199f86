"""Signals a terminal, a container or a scheduler sends, to real `bench run` processes (issue 23, item 1):
SIGTERM (docker stop, SLURM, Kubernetes) and SIGHUP (a closed terminal) stop a run as Ctrl-C does,
with every table written, how it ended recorded, and 128 + the signal's number as the exit status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.core import stopping
from bench.core.keys import CaseKey
from bench.core.results import CaseResult
from bench.core.schema import load_run
from bench.render.header import header_lines
from tests.conftest import ROOT, make_run

TRACEBACK = "Traceback (most recent call last)"


def start_run(
    out: Path, *extra: str, workloads: str = "forward", session: bool = False
) -> subprocess.Popen[str]:
    """A run of several short cases (about 0.6 s each) on synthetic data, as a user starts it."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "bench", "run", "--devices", "cpu", "--passes", "1", "--max-time", "0.6",
            "--workloads", workloads, "--batch-sizes", "8,16,32,64,128,256", "--dataset", "synthetic",
            "--out", str(out), "--retry-contended", "0", *extra,
        ],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=session,
    )  # fmt: skip


def wait_for_line(process: subprocess.Popen[str], starts: str, timeout: float = 240) -> list[str]:
    """Reads stderr until a line starting with `starts`; the lines read so far."""
    assert process.stderr is not None
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if line.lstrip().startswith(starts):
            return seen
    process.kill()
    pytest.fail(f"no line starting with {starts!r}: {''.join(seen)[-2000:]}")


def stop_after_first_case(out: Path, signum: int, *extra: str) -> tuple[int, str, str]:
    process = start_run(out, *extra)
    seen = wait_for_line(process, "[  2/")  # case 1 finished and saved, case 2 begun
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, "".join(seen) + stderr


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_a_run_as_ctrl_c_does(tmp_path: Path, signum: int, code: int) -> None:
    """Was: the run ended at once, no summary.md, results.json left at `running`."""
    out = tmp_path / "run"
    returncode, stdout, stderr = stop_after_first_case(out, signum)
    name = signal.Signals(signum).name
    assert returncode == code, stderr
    assert TRACEBACK not in stderr and "Exception" not in stderr, stderr
    run = load_run(out)
    assert run.state == "interrupted" and run.stopped_by == name and run.in_progress is None
    assert 1 <= len(run.cases) < 6 and all(case.ok for case in run.cases)  # case 1 kept, case 2 abandoned
    summary = (out / "summary.md").read_text()
    assert f"PARTIAL RUN** (interrupted by {name})" in summary
    assert (out / "results.csv").is_file() and (out / "pytest-benchmark.json").is_file()
    assert f"interrupted by {name}: {len(run.cases)} of 6 planned cases kept" in stderr
    assert f"bench report {out}" in stderr and "PARTIAL RUN" in stdout
    assert not (out / ".bench-claim").exists()  # the claim is released with the run


@pytest.mark.slow
def test_a_signal_before_anything_was_measured_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = start_run(out)
    wait_for_line(process, "bench run:")  # the folder claimed, facts and data loaded, the sweep not begun
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143 and TRACEBACK not in stderr, stderr
    if (out / "results.json").exists():  # the signal landed after the first save: a run, stopped
        assert load_run(out).stopped_by == "SIGTERM"
    else:
        assert not out.exists() and "interrupted by SIGTERM" in stderr


def _processes_naming(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (the run folder): torchrun and its ranks."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if text in command and state != "Z":
            found.append(command)
    return found


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code", "group"), [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)]
)
def test_a_signal_to_a_two_process_run_stops_torchrun_and_every_rank_first(
    tmp_path: Path, signum: int, code: int, group: bool
) -> None:
    """Was: SIGTERM ended the command at once while torchrun and both ranks went on writing the folder
    for 28 s; a terminal's Ctrl-C (SIGINT to the whole process group) left it at `running`, no tables."""
    out = tmp_path / "ranks"
    process = start_run(out, "--nproc", "2", workloads="train_step", session=group)
    wait_for_line(process, "[  2/", timeout=400)
    if group:
        os.killpg(process.pid, signum)  # as a terminal's Ctrl-C: every process of the foreground group
    else:
        process.send_signal(signum)
    _stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == code, stderr
    assert not _processes_naming(str(out)), "torchrun or a rank outlived the command"
    assert TRACEBACK not in stderr and "SignalException" not in stderr, stderr[-3000:]
    written = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    run = load_run(out)
    name = signal.Signals(signum).name
    assert run.state == "interrupted" and run.stopped_by == name and run.cases and run.in_progress is None
    assert "PARTIAL RUN" in (out / "summary.md").read_text()
    time.sleep(2)
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == written  # final


# --- in one process: the policies and what a stopped run says ---------------------------------------


def test_sigterm_raises_interrupted_naming_it() -> None:
    with stopping.signals_interrupt(), pytest.raises(stopping.Interrupted) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert stop.value.name == "SIGTERM" and stop.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_first_ctrl_c_asks_to_stop_a_second_raises() -> None:
    asked, said = [], []
    with stopping.stop_after_current_case(said.append, lambda: asked.append(True)):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        assert asked == [True] and "stopping after the current case" in said[0]
        with pytest.raises(stopping.Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)


def test_sigterm_during_a_case_aborts_it_at_once() -> None:
    with (
        stopping.stop_after_current_case(lambda line: None, lambda: None),
        pytest.raises(stopping.Interrupted) as stop,
    ):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert stop.value.name == "SIGTERM"


def test_deferred_signals_are_noted_not_raised() -> None:
    with stopping.signals_interrupt(), stopping.signals_deferred():
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.2)
        assert stopping.requested() == signal.SIGHUP


def test_exit_codes_follow_the_signal() -> None:
    assert [stopping.exit_code_for(name) for name in ("SIGINT", "SIGTERM", "SIGHUP", None)] == [
        130,
        143,
        129,
        130,
    ]


def _case(batch: int) -> CaseResult:
    return CaseResult.failure(CaseKey("forward", "cpu", batch), "skipped", "not run")  # type: ignore[arg-type]


def test_a_run_stopped_after_its_last_case_is_not_partial() -> None:
    run = make_run(_case(1), _case(2))
    run.interrupted_by("SIGINT")
    assert not run.partial
    first = header_lines(run)[0]
    assert "PARTIAL" not in first and "interrupted by SIGINT" in first and "missing" not in first


def test_a_killed_run_says_it_ended_without_a_word() -> None:
    run = make_run(_case(1))
    run.planned_cases = 3
    assert run.partial and "killed, or still running" in header_lines(run)[0]
    assert json.loads(json.dumps(run.to_dict()))["stopped_by"] is None
