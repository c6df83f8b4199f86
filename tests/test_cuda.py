"""The CUDA claims of the README, each asserted on a real GPU (`pytest -m cuda`; skipped without one).

`scripts/cuda-reference.sh` runs these, with every other CUDA test of the suite, in a few minutes on
a GPU machine. They use the committed slice of real Fashion-MNIST, so they need no download.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.core.facts import fact_number
from bench.core.schema import load_run
from bench.measure.devices import SYNC_SHARE_BOUND
from tests.conftest import SMALL_REAL_DIR, cuda_test, run_cli

pytestmark = pytest.mark.cuda
DATA = ("--dataset", "fashion-mnist", "--data-dir", str(SMALL_REAL_DIR), "--no-download")


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every workload on cuda:0 (and the CPU beside it) at a small and a large batch size."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible on this machine")
    out = tmp_path_factory.mktemp("gpu") / "run"
    result = run_cli(
        "run", "--devices", "cpu,cuda:0", "--batch-sizes", "64,1000", "--epochs", "2", "--epoch-repeats", "2",
        "--train-runs", "1", "--passes", "2", "--max-time", "0.4", *DATA, "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    return out


@cuda_test
def test_the_check_passes_with_cuda_required() -> None:
    result = run_cli("check", "--require", "cuda", "--json")
    assert result.returncode == 0, result.output
    lines = {line["name"]: line for line in json.loads(result.stdout)["lines"]}
    for index in range(torch.cuda.device_count()):
        for check in ("matmul", "autograd", "torchvision ops"):
            assert lines[f"{check} cuda:{index}"]["verdict"] == "PASS", lines[f"{check} cuda:{index}"]
    assert lines["device count"]["verdict"] == "PASS"


@cuda_test
def test_every_workload_measures_on_the_gpu_with_its_memory(gpu_run: Path) -> None:
    run = load_run(gpu_run)
    gpu = [case for case in run.cases if case.key.device == "cuda:0"]
    assert {case.key.workload for case in gpu} == {
        "forward",
        "forward_backward",
        "train_step",
        "epoch",
        "train",
    }
    assert {case.key.batch_size for case in gpu} == {64, 1000}  # 1000: the whole slice, one batch an epoch
    for case in gpu:
        assert case.ok, f"{case.key.label()}: {case.error}"
        assert case.own_device_peak_bytes is not None and case.own_device_peak_bytes > 0, case.key.label()
        assert case.peak("device_peak_reserved_bytes") >= case.peak("device_peak_allocated_bytes")
        assert case.peak("nvml_used_bytes") is not None, f"{case.key.label()}: no NVML reading"
    # the case's own peak is its model and batch, not the cuBLAS workspace (tens of MiB) it started with
    small = next(c for c in gpu if c.key.workload == "train_step" and c.key.batch_size == 64)
    assert small.own_device_peak_bytes < 16 * 2**20, "a 200 KB model at batch 64 cannot own 16 MiB"
    resident = next(c for c in gpu if c.key.workload == "epoch" and c.key.loader == "resident")
    assert {r.data_timer for r in resident.passes} == {"cuda events"}


@cuda_test
def test_rounds_keep_the_clock_under_one_percent(gpu_run: Path) -> None:
    run = load_run(gpu_run)
    overhead = fact_number(run.env, "timing", "clock_overhead_s", "cuda:0")
    assert overhead is not None and overhead > 0
    checked = 0
    for case in run.cases:
        if case.key.device != "cuda:0" or case.key.workload not in (
            "forward",
            "forward_backward",
            "train_step",
        ):
            continue
        for record in case.passes:
            assert record.min_round_s is not None and overhead / record.min_round_s <= SYNC_SHARE_BOUND
            round_s = (record.calls_per_round or 1) * min(record.samples_s)
            assert overhead / round_s <= SYNC_SHARE_BOUND * 1.05, f"{case.key.label()}: round {round_s:.2e} s"
            checked += 1
    assert checked >= 6, "three workloads at two batch sizes, timed in rounds on the GPU"


@cuda_test
def test_a_batch_too_large_for_the_gpu_is_an_oom_cell_and_the_sweep_goes_on(tmp_path: Path) -> None:
    free, _total = torch.cuda.mem_get_info()
    huge = int(free // (784 * 4)) * 2  # inputs alone twice the free memory
    out = tmp_path / "run"
    result = run_cli(
        "run", "--devices", "cuda:0", "--workloads", "train_step", "--batch-sizes", f"64,{huge},128",
        "--passes", "1", "--max-time", "0.1", *DATA, "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    statuses = {case.key.batch_size: case.status for case in load_run(out).cases}
    assert statuses == {64: "ok", huge: "oom", 128: "ok"}


@cuda_test
def test_a_gpu_index_past_the_last_is_refused_with_exit_2(tmp_path: Path) -> None:
    result = run_cli("run", "--devices", f"cuda:{torch.cuda.device_count()}", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "r").exists()


@cuda_test
def test_training_on_the_gpu_reaches_the_cpus_accuracy(tmp_path: Path) -> None:
    """Same seed, same batches, same data: the GPU's final test accuracy within 1 point of the CPU's."""
    out = tmp_path / "run"
    result = run_cli(
        "run", "--devices", "cpu,cuda:0", "--workloads", "train", "--batch-sizes", "16", "--epochs", "5",
        "--train-runs", "1", "--passes", "1", *DATA, "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    finals = {case.key.device: case.final_accuracy for case in load_run(out).cases}
    assert finals["cpu"] is not None and finals["cuda:0"] is not None
    assert finals["cpu"] > 0.6, "the slice is learnable: 10 classes, chance is 10%"
    assert abs(finals["cuda:0"] - finals["cpu"]) <= 0.01, finals
