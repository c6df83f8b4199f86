"""The issue's speed and accuracy targets, checked by benchmark runs of the harness itself.

Each target compares numbers measured side by side in one run or one process (ratios), except the
wall-clock budget of `--quick`, which is a budget by definition. pytest-benchmark records every
measurement here in its JSON (run with --benchmark-json to keep it).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.utils.benchmark as torch_benchmark

from bench.data import Dataset, load_dataset
from bench.devices import device_clock
from bench.report import epoch_vs_steps, index_cases, time_to_target
from bench.results import CaseKey, Run, load_run
from bench.runner import Item, Options, Sweep
from bench.workloads import make_step
from tests.conftest import FASHION_DIR, requires_fashion, run_cli

pytestmark = pytest.mark.targets

QUICK_BUDGET_S = 60.0
EPOCH_OVERHEAD_LIMIT = 1.3
TIMER_AGREEMENT = 0.10
ACCURACY_TARGET = 0.80


def test_quick_run_finishes_within_a_minute(benchmark: Any, tmp_path: Path) -> None:
    """`bench run --quick` on a fresh process, start-up included, with the default dataset (auto)."""

    def quick() -> int:
        out = tmp_path / f"run-{time.monotonic_ns()}"
        return run_cli(
            "run", "--quick", "--out", str(out), env={"BENCH_DATA_DIR": str(tmp_path / "data")}
        ).returncode

    code = benchmark.pedantic(quick, rounds=1, iterations=1)
    assert code == 0
    wall = benchmark.stats.stats.max
    benchmark.extra_info["wall_s"] = wall
    assert wall < QUICK_BUDGET_S, f"bench run --quick took {wall:.1f} s (budget {QUICK_BUDGET_S:.0f} s)"


@requires_fashion
def test_resident_epoch_costs_little_more_than_its_train_steps(tmp_path: Path) -> None:
    """Resident epoch at batch 64 on the CPU <= 1.3x the same number of train_steps, same run."""
    out = tmp_path / "run"
    result = run_cli(
        "run", "--devices", "cpu", "--workloads", "train_step,epoch", "--loaders", "resident",
        "--batch-sizes", "64", "--epoch-repeats", "3", "--passes", "3", "--max-time", "3",
        "--dataset", "fashion-mnist", "--data-dir", str(FASHION_DIR), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    run = load_run(out)
    cases = index_cases(run)
    ratio = epoch_vs_steps(cases[("epoch", "cpu", 64, "resident")], cases)
    assert ratio is not None
    print(f"resident epoch / (938 x train_step) at batch 64: {ratio:.2f}x")
    assert ratio <= EPOCH_OVERHEAD_LIMIT, (out / "summary.md").read_text()


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    if not FASHION_DIR.is_dir():
        pytest.skip("real data missing: apt-get install dataset-fashion-mnist")
    return load_dataset("fashion-mnist", FASHION_DIR)


def _timer_median(step: Any, seconds: float) -> float:
    timer = torch_benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=seconds).median


def _harness_fixture(request: pytest.FixtureRequest, max_time: float) -> Any:
    """A pytest-benchmark fixture configured as `bench run` configures it (device timer, 1 ms rounds).

    One test may use the `benchmark` fixture once; alternating with Timer needs several, so they are
    made the way pytest-benchmark's own fixture makes them.
    """
    from pytest_benchmark.fixture import BenchmarkFixture
    from pytest_benchmark.utils import NameWrapper

    session = request.config._benchmarksession  # type: ignore[attr-defined]
    options = dict(session.options, timer=NameWrapper(device_clock("cpu")), min_time=1e-3, max_time=max_time)
    options["disable_gc"] = True
    return BenchmarkFixture(
        request.node,
        add_stats=session.benchmarks.append,
        logger=session.logger,
        warner=request.node.warn,
        disabled=False,
        **options,
    )


@requires_fashion
def test_train_step_agrees_with_torch_utils_benchmark(
    request: pytest.FixtureRequest, fashion: Dataset, tmp_path: Path
) -> None:
    """The harness's train_step at batch 64 (Sweep.measure through pytest-benchmark) vs torch's Timer.

    This machine's speed drifts by tens of percent within seconds, so the two are measured in five
    alternating slots of about half a second each, and the medians over the slots are compared.
    """
    key = CaseKey("train_step", "cpu", 64)
    harness, reference = [], []
    for slot in range(5):
        sweep = Sweep(
            run=Run("t", "now", {}, fashion.info.as_dict(), {}),
            folder=tmp_path,
            dataset=fashion,
            options=Options(devices=("cpu",), batch_sizes=(64,), workloads=("train_step",), passes=1),
            cases=[key],
            progress=lambda line: None,
        )
        if slot % 2:  # alternate which goes first, so neither always sees the machine warmer
            reference.append(_timer_median(make_step("train_step", fashion, "cpu", 64), 0.5))
        result = sweep.measure(Item(key, 0), _harness_fixture(request, max_time=0.5))
        assert result.ok and result.median_s is not None
        harness.append(result.median_s)
        if not slot % 2:
            reference.append(_timer_median(make_step("train_step", fashion, "cpu", 64), 0.5))
    ratio = statistics.median(harness) / statistics.median(reference)
    print(
        f"harness {statistics.median(harness) * 1e6:.1f} us vs torch Timer {statistics.median(reference) * 1e6:.1f} us:"
        f" {ratio:.3f} (slots: {' '.join(f'{h / r:.2f}' for h, r in zip(harness, reference, strict=True))})"
    )
    assert abs(ratio - 1) <= TIMER_AGREEMENT


@requires_fashion
def test_chapter_training_reaches_80_percent_on_fashion_mnist(tmp_path: Path) -> None:
    """The chapter's settings (batch 64, SGD 0.01, 10 epochs) on real Fashion-MNIST: >= 80% test accuracy."""
    out = tmp_path / "run"
    result = run_cli(
        "run", "--devices", "cpu", "--workloads", "train", "--batch-sizes", "64", "--epochs", "10",
        "--dataset", "fashion-mnist", "--data-dir", str(FASHION_DIR), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    case = load_run(out).cases[0]
    assert case.test_accuracy is not None and len(case.test_accuracy) == 10
    print("test accuracy per epoch:", " ".join(f"{a:.3f}" for a in case.test_accuracy))
    assert max(case.test_accuracy) >= ACCURACY_TARGET
    epochs, _seconds = time_to_target(case)
    assert epochs is not None and epochs <= 10
