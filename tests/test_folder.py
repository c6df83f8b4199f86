"""The run folder under an unlucky or hostile hand (issue 23, item 2), with real `bench run` processes:
two runs into one folder, a link planted in it, a full or read-only file system, names that are
empty, too long or not ASCII under LANG=C. Each: the exit status named, one line, nothing lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.core.errors import UsageError, WriteFailure
from bench.core.schema import load_run
from bench.core.store import CLAIM_FILE, claim_run_folder, release_run_folder, write_atomic
from tests.conftest import ROOT

TRACEBACK = "Traceback (most recent call last)"
TINY = (
    "--devices", "cpu", "--passes", "1", "--max-time", "0.3", "--workloads", "forward",
    "--dataset", "synthetic", "--retry-contended", "0",
)  # fmt: skip


def start(
    out: Path | str, *extra: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "run", *TINY, "--out", str(out), *extra],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def one_error_line(stderr: str) -> str:
    """The error and its hint: no traceback, nothing else."""
    assert TRACEBACK not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("bench run: error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of the test's own, where this machine lets the test mount one (root, CAP_SYS_ADMIN)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; a full or read-only file system cannot be made here")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"this machine refuses to mount a tmpfs: {made.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> None:
    """Writes a file until the file system holding `folder` is full."""
    with open(folder / "filler", "wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError:
            pass


# --- two runs, one folder ------------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_started_at_once_into_one_folder_one_is_refused(tmp_path: Path) -> None:
    """Was: both exited 0 and printed Results:, and the folder held one run."""
    out = tmp_path / "shared"
    processes = [start(out, "--batch-sizes", "32,64"), start(out, "--batch-sizes", "32,64")]
    results = [finish(process) for process in processes]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [stderr for _, _, stderr in results]
    loser = next(stderr for code, _, stderr in results if code == 2)
    line = one_error_line(loser)
    assert "two runs cannot share a folder" in line or "already holds a run" in line, loser
    assert "Results:" not in next(stdout for code, stdout, _ in results if code == 2)
    run = load_run(out)
    assert run.state == "complete" and len(run.cases) == 2


def test_a_held_folder_is_refused_naming_its_run(tmp_path: Path) -> None:
    claim_run_folder(tmp_path, "abc123")
    try:
        holder = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from bench.core.store import "
             "claim_run_folder; claim_run_folder(Path(sys.argv[1]), 'second')", str(tmp_path)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        )  # fmt: skip
        assert (
            holder.returncode != 0 and "run abc123 (pid " in holder.stderr and "UsageError" in holder.stderr
        )
    finally:
        release_run_folder(tmp_path)
    assert not (tmp_path / CLAIM_FILE).exists()
    claim_run_folder(tmp_path, "third")  # released: free again
    release_run_folder(tmp_path)


# --- links, stray folders, names ------------------------------------------------------------------


@pytest.mark.slow
def test_a_planted_link_is_replaced_and_nothing_is_written_outside(tmp_path: Path) -> None:
    """Was: pytest-benchmark wrote its JSON through a link planted in the folder, over the file it named,
    and every run left an empty .benchmarks/ in the current folder. Also: a non-ASCII folder under
    LANG=C with an ASCII-only terminal, which once lost the tables after measuring."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("not yours")
    out = cwd / "résultats-über"
    out.mkdir()
    (out / "pytest-benchmark.json").symlink_to(victim)
    code, stdout, stderr = finish(
        start(
            out, "--batch-sizes", "32", cwd=cwd, env={"LANG": "C", "LC_ALL": "C", "PYTHONIOENCODING": "ascii"}
        )
    )
    assert code == 0, stderr
    assert TRACEBACK not in stderr and "UnicodeEncodeError" not in stderr
    assert victim.read_text() == "not yours"
    planted = out / "pytest-benchmark.json"
    assert not planted.is_symlink() and json.loads(planted.read_text())["benchmarks"]
    assert sorted(path.name for path in cwd.iterdir()) == [out.name]  # no .benchmarks/
    assert (out / "summary.md").is_file() and "r?sultats" in stdout  # printed, the character replaced


def test_write_atomic_replaces_a_link_instead_of_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "link").symlink_to(victim)
    write_atomic(tmp_path / "link", "new")
    assert victim.read_text() == "keep" and (tmp_path / "link").read_text() == "new"
    assert not (tmp_path / "link").is_symlink()


def test_an_empty_or_overlong_out_is_refused_in_one_line(tmp_path: Path) -> None:
    code, _, stderr = finish(start("", "--batch-sizes", "32", cwd=tmp_path))
    assert code == 2 and "argument --out" in stderr and TRACEBACK not in stderr, stderr
    assert list(tmp_path.iterdir()) == []
    code, _, stderr = finish(start(tmp_path / ("x" * 300), "--batch-sizes", "32"))
    assert code == 2 and "File name too long" in one_error_line(stderr), stderr


# --- a file system that takes no more -----------------------------------------------------------


def test_a_read_only_folder_is_refused_before_anything_is_measured(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if os.geteuid() == 0:  # permission bits do not stop root: a read-only tmpfs does
        folder = request.getfixturevalue("tmpfs")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        expected = "Read-only file system"
    else:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        expected = "Permission denied"
    code, stdout, stderr = finish(start(folder / "run", "--batch-sizes", "32"))
    assert code == 2 and expected in one_error_line(stderr), stderr
    assert "Results:" not in stdout


def test_a_refused_write_is_one_line_naming_the_file(tmpfs: Path) -> None:
    fill(tmpfs)
    with pytest.raises(WriteFailure, match="No space left on device") as failure:
        write_atomic(tmpfs / "results.json", "x" * 100_000)
    assert "the disk is full" in str(failure.value)
    assert sorted(path.name for path in tmpfs.iterdir()) == ["filler"]  # no temporary left


@pytest.mark.slow
@pytest.mark.parametrize("how", ["full", "deleted"])
def test_a_disk_that_fills_or_a_folder_deleted_mid_run_stops_it_cleanly(tmpfs: Path, how: str) -> None:
    """Was: the failed write swallowed as a case failure, the other cases skipped in 0 s, a 70-line
    traceback, and pytest-benchmark.json cut short. (A tmpfs cannot be remounted read-only while the
    run holds files open for writing, so a read-only file system is tested before the run above.)"""
    out = tmpfs / "run"
    process = start(out, "--batch-sizes", "8,16,32,64,128,256")
    assert process.stderr is not None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not process.stderr.readline().lstrip().startswith("[  2/"):
        pass
    if how == "full":
        fill(tmpfs)
    else:
        shutil.rmtree(out)
    code, stdout, stderr = finish(process)
    assert code == 1, stderr
    line = one_error_line(stderr)
    assert ("No space left on device" if how == "full" else "No such file or directory") in line, stderr
    assert "Results:" not in stdout
    if how == "deleted":
        assert "the folder is gone" in stderr and not out.exists()
        return
    run = load_run(out)  # the last good save: valid, every case it holds finished
    assert 1 <= len(run.cases) < 6 and all(case.ok for case in run.cases)
    benchmark_json = out / "pytest-benchmark.json"
    assert not benchmark_json.exists() or json.loads(benchmark_json.read_text())
    assert not any(path.name.startswith(".") and path.name != CLAIM_FILE for path in out.iterdir())


def test_usage_error_is_what_a_claim_raises(tmp_path: Path) -> None:
    claim_run_folder(tmp_path, "one")
    try:
        # the same process holds it through another open file: flock refuses that too
        with pytest.raises(UsageError, match="is being written by run one"):
            claim_run_folder(tmp_path / ".", "two")
    finally:
        release_run_folder(tmp_path)
