"""`bench run --nproc N`: starts the ranks with torchrun and keeps the run going when one of them fails.

The work is done by the ranks (`bench.engine.distributed`, started as `torchrun ... -m bench run ...`);
rank 0 alone writes the run folder. This supervisor only starts torchrun, passes its output through,
and when the worker group fails (a rank killed, a rank hung past the collective timeout, a case that
raised on one rank), it records the case that was being measured (`Run.in_progress`) as an `error`
(or `oom`) cell naming the rank and the cause, from torchrun's own failure summary and the fault
report the failing rank left, and starts the group again on the cases left: later cases go on, and
nothing finished is lost.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.core.catalog import Status
from bench.core.envvars import env_path, env_threads
from bench.core.errors import RunFailure, one_line
from bench.core.results import CaseResult, Run
from bench.core.stopping import interrupt_of, signals_deferred
from bench.core.store import RESULTS_FILE, save_run

FAULT_DIR_ENV = "BENCH_FAULT_DIR"
COMMAND_LINE_ENV = "BENCH_COMMAND_LINE"  # what the user typed, recorded by rank 0
TAIL_LINES = 400


def torchrun_command(nproc: int, bench_args: list[str]) -> list[str]:
    """One machine, `nproc` ranks, no restarts (this supervisor decides what happens after a failure)."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
        "--max-restarts", "0", "--monitor-interval", "0.5", "-m", "bench", "run", *bench_args,
    ]  # fmt: skip


def worker_args(argv: list[str], folder: Path, resume: bool) -> list[str]:
    """The user's `bench run` arguments for the ranks: their folder fixed, --resume after a failure, and
    --nproc left out (the ranks know their number from torchrun; torchrun would read `--nproc` as an
    abbreviation of its own --nproc-per-node)."""
    kept: list[str] = []
    skip = False
    for argument in argv[1:] if argv[:1] == ["run"] else argv:
        if skip:
            skip = False
        elif argument == "--nproc":
            skip = True
        elif not argument.startswith("--nproc="):
            kept.append(argument)
    return [*kept, "--out", str(folder), *(["--resume"] if resume else [])]


def write_fault(error: BaseException, rank: int) -> None:
    """What a failing rank leaves for the supervisor: its rank, the error on one line, and whether it was OOM."""
    folder = env_path(FAULT_DIR_ENV)
    if not folder:
        return
    from bench.measure.failures import is_out_of_memory

    report = {"rank": rank, "error": one_line(error), "oom": is_out_of_memory(error)}
    try:
        Path(folder, f"rank-{rank}.json").write_text(json.dumps(report))
    except OSError:
        pass


ROOT_CAUSE = re.compile(
    r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)[^\n]*\n(.*?)(?:={5,}|$)", re.S
)


def failure_cause(output: str, fault_dir: Path) -> tuple[str, bool]:
    """(what to say about the failure, whether it was an out-of-memory), from torchrun's summary and the
    ranks' fault reports. The first failure torchrun observed is the root cause."""
    reports = {}
    for path in fault_dir.glob("rank-*.json"):
        try:
            report = json.loads(path.read_text())
            reports[int(report["rank"])] = report
        except (OSError, ValueError, KeyError):
            continue
    match = ROOT_CAUSE.search(output)
    if match is not None:
        rank, code = int(match.group(1)), int(match.group(2))
        if rank in reports:
            return f"rank {rank} failed: {reports[rank]['error']}", bool(reports[rank].get("oom"))
        how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else (
            f"exited with status {code}")  # fmt: skip
        others = "; ".join(f"rank {r}: {report['error']}" for r, report in sorted(reports.items()))
        return f"rank {rank} {how}" + (f" ({others})" if others else ""), False
    if reports:
        rank, report = min(reports.items())
        return f"rank {rank} failed: {report['error']}", bool(report.get("oom"))
    lines = [line for line in output.splitlines() if line.strip()]
    return "the worker group failed: " + (lines[-1][:300] if lines else "no output"), False


def record_fault(folder: Path, cause: str, oom: bool) -> bool:
    """Marks the case the ranks were measuring as failed; False when there is none to blame (no progress)."""
    from bench.core.schema import load_run

    if not (folder / RESULTS_FILE).exists():
        return False
    run = load_run(folder)
    key = run.in_progress
    if key is None:
        return False
    status = Status.OOM if oom else Status.ERROR
    message = f"the worker group failed during this case: {cause}"
    earlier = run.case(key)
    run.store(
        CaseResult.failure(key, status, message)
        if earlier is None
        else replace(earlier, status=status, error=message)
    )
    run.in_progress = None
    save_run(run, folder)
    return True


STOP_GRACE_S = 60  # torchrun gives the ranks 30 s after it passes the signal on, then kills them


def stream(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Runs torchrun with its output passed through; returns its status and the tail of its stderr.

    torchrun starts in a session of its own, so a terminal's Ctrl-C reaches this process alone; a stop
    signal here (Interrupted) is passed on to torchrun as SIGTERM, which passes it to every rank, and
    is raised again only once torchrun has exited: the ranks have stopped and rank 0 has saved."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    process = subprocess.Popen(
        command,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        errors="replace",
        start_new_session=True,
    )
    assert process.stderr is not None
    try:
        for line in process.stderr:
            _pass_on(line)
            tail.append(line)
        return process.wait(), "".join(tail)
    except KeyboardInterrupt:
        with signals_deferred():  # a second signal does not cut the ranks' saving short
            _stop(process, tail)
        raise
    finally:
        process.stderr.close()


def _pass_on(line: str) -> None:
    try:
        sys.stderr.write(line)
    except OSError:  # a terminal gone (SIGHUP): the ranks go on writing the folder all the same
        pass


def _stop(process: subprocess.Popen[str], tail: deque[str]) -> None:
    """SIGTERM to torchrun, then its output drained (kept in the tail only: torchrun reports the signal
    with a traceback of its own) until it exits; killed with its process group after STOP_GRACE_S."""
    assert process.stderr is not None
    try:
        process.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    drain = threading.Thread(target=lambda: tail.extend(process.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    drain.join(timeout=5)


def supervise(argv: list[str], nproc: int, folder: Path, progress: Any = None) -> Run:
    """Starts the ranks until every planned case is measured or recorded as failed; returns the run.
    On a stop signal, once every rank has stopped: the run as rank 0 saved it, marked interrupted by
    that signal (Interrupted is raised again only when rank 0 saved nothing)."""
    try:
        return _supervise(argv, nproc, folder, progress)
    except KeyboardInterrupt as error:
        from bench.core.schema import load_run

        if not (folder / RESULTS_FILE).exists():
            raise
        run = load_run(folder)
        run.interrupted_by(interrupt_of(error).name)
        save_run(run, folder)
        return run


def _supervise(argv: list[str], nproc: int, folder: Path, progress: Any = None) -> Run:
    from bench.core.schema import load_run

    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    attempt = 0
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as faults:
        env = {
            **os.environ,
            FAULT_DIR_ENV: faults,
            COMMAND_LINE_ENV: shlex.join(["bench", *argv]),
            "OMP_NUM_THREADS": env_threads("OMP_NUM_THREADS") or "1",  # the ranks set their own share
        }
        while True:
            command = torchrun_command(nproc, worker_args(argv, folder, resume=attempt > 0))
            say(
                f"bench run: starting {nproc} processes with torchrun"
                + (f" (restart {attempt})" if attempt else "")
            )
            code, output = stream(command, env)
            if code == 0:
                break
            cause, oom = failure_cause(output, Path(faults))
            if not record_fault(folder, cause, oom):
                raise RunFailure(
                    f"the worker group failed outside any case: {cause}",
                    hint="torchrun's report above says more; the cases measured so far are in the run folder",
                )
            say(f"bench run: {cause}; the case is recorded as failed, the others go on")
            for path in Path(faults).glob("rank-*.json"):
                path.unlink()
            attempt += 1
    return load_run(folder)
