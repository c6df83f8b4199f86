"""`bench compare`: same code twice, a run made slower on purpose, differing machines, bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bench.analysis.compare import FASTER, SAME, SLOWER, beyond_floor, compare_runs
from bench.core.records import PassRecord
from bench.core.schema import load_run
from bench.core.store import RESULTS_FILE
from bench.render.comparison import comparison_markdown
from tests.conftest import ROOT, run_cli

V1_FILE = ROOT / "tests" / "data" / "results-v1.json"

COMPARE_ARGS = (
    "--devices", "cpu", "--workloads", "train_step,epoch", "--loaders", "resident", "--batch-sizes", "64,256",
    "--passes", "4", "--max-time", "1.2", "--epoch-repeats", "4", "--dataset", "synthetic",
    "--retry-contended", "0",  # the two runs share one core: every pass is contended by design
)  # fmt: skip


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same code run twice at the same time on one shared core, one torch thread each.

    Run one after the other on this kind of shared VM, identical runs were seen to differ by 20-60%
    (the host's speed drifts over tens of seconds and differs between its two vCPUs), which nothing
    inside a run can see. Sharing one core, the two runs live through the same drift and the same
    preemptions; what differs between them is what compare must not call a change.
    """
    base = tmp_path_factory.mktemp("compare")
    warm = run_cli("run", "--workloads", "forward", "--batch-sizes", "1", "--passes", "1", "--max-time", "0.01",
                   "--dataset", "synthetic", "--data-dir", str(base / "data"), "--out", str(base / "warm"))  # fmt: skip
    assert warm.returncode == 0, warm.output  # the synthetic files now exist: neither run writes them
    core = min(os.sched_getaffinity(0))
    processes = []
    for name in ("a", "b"):
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench",
                    "run",
                    *COMPARE_ARGS,
                    "--data-dir",
                    str(base / "data"),
                    "--out",
                    str(base / name),
                ],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=lambda: os.sched_setaffinity(0, {core}),
            )
        )
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stdout + stderr
    return _uncontended(base / "a"), _uncontended(base / "b")


def _uncontended(folder: Path) -> Path:
    """The run without its contention readings. The two runs share one core on purpose, so every pass
    waits for the other and is (rightly) contended, which compare would refuse to judge; these tests
    check compare's statistics on real samples (contention is tests/test_contention.py's)."""
    data = json.loads((folder / RESULTS_FILE).read_text())
    for case in data["cases"]:
        for record in case["passes"]:
            record["contention"] = None
    (folder / RESULTS_FILE).write_text(json.dumps(data))
    return folder


def _slowed_copy(
    source: Path, target: Path, factor: float, torch_version: str | None = None, quiet: bool = False
) -> Path:
    """A copy of a real run, its times multiplied by `factor`. `quiet`: each case's samples are first
    replaced by its first one, spread by at most 2%, so that the floor alone decides the verdicts."""
    data = json.loads((source / RESULTS_FILE).read_text())
    for case in data["cases"]:
        base = case["passes"][0]["samples_s"][0]
        for p, record in enumerate(case["passes"]):
            samples = record["samples_s"]
            if quiet:
                samples = [base * (1 + 0.01 * ((p + i) % 3)) for i in range(len(samples))]
            record["samples_s"] = [x * factor for x in samples]
    if torch_version:
        data["env"]["torch"]["version"] = torch_version
    target.mkdir()
    (target / RESULTS_FILE).write_text(json.dumps(data))
    return target


AA_MIN_EFFECT = 0.10  # two identical processes side by side on one core differed by up to 5.7% in CI


@pytest.mark.targets  # a timing assertion: two processes' speeds, which a busy machine can part
def test_same_code_twice_shows_no_significant_change(two_runs: tuple[Path, Path]) -> None:
    """Identical code is never called changed beyond a 10% floor.

    The floor is 10%, not the default 5%: even sharing one core, two processes of the same code
    were seen in CI to differ by 5.7% on one case with tight intervals (a process-level offset,
    memory layout and cache phase, which no statistic inside one run can see). That is what
    `--min-effect` is for on shared machines.
    """
    comparison = compare_runs(load_run(two_runs[0]), load_run(two_runs[1]), min_effect=AA_MIN_EFFECT)
    verdicts = {row.key.label(): row.verdict for row in comparison.rows}
    assert len(verdicts) == 4
    assert set(verdicts.values()) == {SAME}, comparison_markdown(comparison)
    assert not comparison.warnings
    result = run_cli(
        "compare", str(two_runs[0]), str(two_runs[1]), "--fail-above", "10", "--min-effect", "10"
    )
    assert result.returncode == 0, result.output
    assert "0 slower, 0 faster" in result.stdout
    assert "10% (--min-effect)" in result.stdout
    for row in comparison.rows:  # every case says what it could have seen: a change beyond the floor
        assert row.detectable is not None and row.detectable >= 1 + comparison.min_effect


def test_min_effect_sets_the_floor(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    """A 1.3x slowdown of quiet cases is called at the default 5% floor and at 20%, not at 40% or 50%.

    The cases are made quiet on purpose: with real noise a case may rightly be too noisy to call
    (CI once measured an interval of 0.99-1.70 at 1.3x), and then this test would check the noise,
    not the floor.
    """
    quiet = _slowed_copy(two_runs[0], tmp_path / "quiet", factor=1.0, quiet=True)
    slowed = _slowed_copy(two_runs[0], tmp_path / "slowed", factor=1.3, quiet=True)
    at_default = run_cli("compare", str(quiet), str(slowed))
    assert at_default.returncode == 0 and "4 slower, 0 faster" in at_default.stdout, at_default.output
    assert "5% (--min-effect)" in at_default.stdout
    for percent, slower in ((20, 4), (40, 0), (50, 0)):
        comparison = compare_runs(load_run(quiet), load_run(slowed), min_effect=percent / 100)
        assert comparison.min_effect == pytest.approx(percent / 100)
        verdicts = [row.verdict for row in comparison.rows]
        assert verdicts.count(SLOWER) == slower and verdicts.count(SAME) == 4 - slower, comparison_markdown(
            comparison
        )
    at_half = run_cli("compare", str(quiet), str(slowed), "--min-effect", "50")
    assert at_half.returncode == 0 and "0 slower, 0 faster" in at_half.stdout, at_half.output
    assert "a floor of 50.0%" in at_half.stdout
    for bad in ("-1", "nan"):
        wrong = run_cli("compare", str(quiet), str(slowed), "--min-effect", bad)
        assert wrong.returncode == 2 and "--min-effect" in wrong.stderr and bad in wrong.stderr, wrong.output


def test_a_slowed_copy_is_found_and_fails_the_gate(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    slowed = _slowed_copy(two_runs[0], tmp_path / "slowed", factor=5.0)
    comparison = compare_runs(load_run(two_runs[0]), load_run(slowed))
    slower = [row for row in comparison.rows if row.verdict == SLOWER]
    assert slower, comparison_markdown(comparison)
    assert all(
        row.estimate is not None and row.estimate.ratio == pytest.approx(5.0) for row in comparison.rows
    )
    assert all(row.verdict in (SLOWER, SAME) for row in comparison.rows)
    gate = run_cli("compare", str(two_runs[0]), str(slowed), "--fail-above", "50")
    assert gate.returncode == 1, gate.output
    assert "slower than A by more than 50%" in gate.stderr
    assert run_cli("compare", str(two_runs[0]), str(slowed), "--fail-above", "450").returncode == 0
    faster = compare_runs(load_run(slowed), load_run(two_runs[0]))
    assert {row.verdict for row in faster.rows} <= {FASTER, SAME} and any(
        r.verdict == FASTER for r in faster.rows
    )


def test_differing_builds_are_warned_about(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    other = _slowed_copy(two_runs[1], tmp_path / "other", factor=1.0, torch_version="2.13.0")
    result = run_cli("compare", str(two_runs[0]), str(other), "--out", str(tmp_path / "cmp.md"))
    assert result.returncode == 0
    assert "torch differs" in result.stdout and "2.13.0" in result.stdout
    assert (tmp_path / "cmp.md").read_text().startswith("# Comparison")


def test_a_run_against_itself_and_a_folder_of_runs_are_explained(two_runs: tuple[Path, Path]) -> None:
    same = run_cli("compare", str(two_runs[0]), str(two_runs[0]))
    assert same.returncode == 0 and "are the same run" in same.stdout
    parent = run_cli("compare", str(two_runs[0].parent), str(two_runs[1]))
    assert parent.returncode == 2
    assert "holds run folders, not a run" in parent.stderr and two_runs[0].name in parent.stderr


def test_compare_refuses_files_that_are_not_results(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    truncated = tmp_path / "t"
    truncated.mkdir()
    text = (two_runs[0] / RESULTS_FILE).read_text()
    (truncated / RESULTS_FILE).write_text(text[:500])
    result = run_cli("compare", str(two_runs[0]), str(truncated))
    assert result.returncode == 2 and "truncated" in result.stderr and "Traceback" not in result.output
    assert run_cli("compare", str(two_runs[0]), str(two_runs[1]), "--fail-above", "-5").returncode == 2
    blocked = run_cli(
        "compare", str(two_runs[0]), str(two_runs[1]), "--out", str(truncated / RESULTS_FILE / "x.md")
    )
    assert blocked.returncode == 2 and "cannot write" in blocked.stderr


def test_the_floor_weighs_halving_and_doubling_alike() -> None:
    # a noise floor of 90%: B/A must leave 1/1.9..1.9 to be called, in either direction
    assert beyond_floor(5.0, 0.9) and beyond_floor(0.2, 0.9)
    assert not beyond_floor(1.5, 0.9) and not beyond_floor(1 / 1.5, 0.9)
    for ratio in (0.3, 0.52, 0.6, 1.04, 1.06, 1.8, 2.0, 3.3):
        assert beyond_floor(ratio, 0.9) == beyond_floor(1 / ratio, 0.9)
        assert beyond_floor(ratio, 0.05) == beyond_floor(1 / ratio, 0.05)


def test_a_case_that_cannot_see_a_doubling_says_how_many_passes_would() -> None:
    """Two passes of units that differ 3x within a run: compare names the detectable change and the cure."""
    a, b = load_run(V1_FILE), load_run(V1_FILE)
    for run, seconds in ((a, (1e-3, 3e-3)), (b, (2e-3, 1.2e-3))):
        run.cases = [
            replace(case, passes=[PassRecord(i, [s]) for i, s in enumerate(seconds)])
            if case.key.workload == "train_step"
            else case
            for case in run.cases
        ]
    comparison = compare_runs(a, b)
    blind = [row for row in comparison.rows if row.key.workload == "train_step"]
    assert len(blind) == 5 and all(row.detectable is not None and row.detectable > 2 for row in blind)
    assert all(row.passes_needed is not None and row.passes_needed > 2 for row in blind)
    text = comparison_markdown(comparison)
    assert "could not have seen a change of 2x" in text
    assert f"--passes {blind[0].passes_needed}" in text
    # identical in A and B (B/A = 1): the detectable change is where the interval ends, or the floor
    forward = [row for row in comparison.rows if row.key.workload == "forward"]
    assert len(forward) == 5, [row.key.label() for row in comparison.rows]
    for row in forward:
        assert row.estimate is not None and row.estimate.ratio == pytest.approx(1.0)
        assert row.detectable == pytest.approx(max(row.estimate.high, 1 + comparison.min_effect))
