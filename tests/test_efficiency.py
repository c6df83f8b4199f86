"""Efficiency and energy: FLOPs counted from the model's shapes, limits measured on the device, counters read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.analysis.metrics import energy_figures, overhead_share, peak_fraction, verdict
from bench.core.catalog import ENERGY_MIN_WINDOW_S
from bench.core.keys import CaseKey
from bench.core.records import EnergyRecord, PassRecord
from bench.core.results import CaseResult, Peaks, Run
from bench.core.schema import load_run
from bench.measure.efficiency import (
    count_ops,
    flops_per_sample,
    matmul_peak,
    measure_peaks,
    op_floor,
    precisions_for,
)
from bench.measure.energy import EnergyMeter, cpu_meter, meter_for, rapl_domains
from bench.measure.model import build_training
from tests.conftest import cuda_test


def test_flops_follow_the_counting_rule_from_the_models_shapes() -> None:
    net = build_training("cpu").net
    weights = [m.weight.numel() for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert weights == [784 * 64, 64 * 10]
    assert flops_per_sample(net, backward=False) == 2 * sum(weights) == 101_632
    # backward: weight gradients of both layers, the input gradient of the second only
    assert flops_per_sample(net, backward=True) == 4 * sum(weights) + 2 * 64 * 10 == 204_544
    wider = torch.nn.Sequential(torch.nn.Linear(100, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    assert flops_per_sample(wider, backward=True) == 4 * (100 * 30 + 30 * 5) + 2 * 30 * 5


def test_the_counted_flops_are_the_matmuls_autograd_runs() -> None:
    """torch's own FlopCounterMode, which counts the matmuls dispatched, agrees with the rule."""
    from torch.utils.flop_counter import FlopCounterMode

    training = build_training("cpu")
    inputs, labels = torch.randn(32, 784), torch.zeros(32, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        training.forward_backward(inputs, labels)
    assert counter.get_total_flops() == 32 * flops_per_sample(training.net, backward=True)


def test_ops_are_counted_as_the_device_dispatches_them() -> None:
    training = build_training("cpu")
    inputs, labels = torch.randn(8, 784), torch.zeros(8, dtype=torch.long)
    forward = count_ops(lambda: training.forward(inputs))
    step = count_ops(lambda: training.step(inputs, labels))
    assert 2 <= forward < step  # two linear layers at least; a training step does far more
    assert count_ops(lambda: None) == 0


def test_the_peak_is_a_real_measurement_that_grows_with_precision_asked() -> None:
    flops, side = matmul_peak("cpu", "float32")
    assert 1e8 < flops < 1e14 and side >= 512
    assert 0 < op_floor("cpu") < 1e-3
    peaks = measure_peaks("cpu", ("float32",))
    assert (
        peaks.float32 is not None and peaks.float32_matmul_side is not None and peaks.op_floor_s is not None
    )
    assert peaks.bfloat16 is None and peaks.tfloat32 is None  # only the precisions asked for
    assert precisions_for("cpu", ("eager", "bf16", "tf32")) == ("float32", "bfloat16")  # no TF32 on a CPU
    assert precisions_for("cuda:0", ("eager", "tf32")) == ("float32", "tfloat32")


def test_a_runs_limits_are_its_best_of_start_and_end() -> None:
    start = Peaks(float32=1.2e11, float32_matmul_side=1024, op_floor_s=2e-6)
    end = Peaks(float32=1.5e11, float32_matmul_side=2048, op_floor_s=3e-6)
    best = Peaks(float32=1.5e11, float32_matmul_side=2048, op_floor_s=2e-6)
    assert start.best_of(end) == best and end.best_of(start) == best
    gpu_start, gpu_end = (
        Peaks(op_floor_s=5e-6, kernel_floor_s=2e-6),
        Peaks(op_floor_s=4e-6, kernel_floor_s=3e-6),
    )
    assert gpu_start.best_of(gpu_end) == Peaks(op_floor_s=4e-6, kernel_floor_s=2e-6)


def test_on_a_gpu_the_kernels_a_graph_replays_can_explain_what_its_two_ops_cannot(small_run: Path) -> None:
    """A CUDA graph's step dispatches 2 ATen ops but launches 20 kernels: judged on the larger."""
    run: Run = load_run(small_run)
    run.peaks = {"cuda:0": Peaks(float32=50e12, op_floor_s=5e-6, kernel_floor_s=2e-6)}
    graphed = CaseResult(CaseKey("train_step", "cuda:0", 64, mode="cuda-graph"), samples_per_unit=64,
                         passes=[PassRecord(0, [50e-6])], flops_per_sample=204_544, ops_per_step=2,
                         kernels_per_step=20)  # fmt: skip
    assert overhead_share(run, graphed) == pytest.approx(20 * 2e-6 / 50e-6)  # 80%, not 2 x 5 us = 20%
    assert verdict(run, graphed) == "overhead-bound"
    uncounted = CaseResult(graphed.key, samples_per_unit=64, passes=[PassRecord(0, [50e-6])],
                           flops_per_sample=204_544, ops_per_step=2)  # fmt: skip
    assert overhead_share(run, uncounted) == pytest.approx(0.2)  # no profiler count: the ops alone


def _case(mode: str, seconds: float, ops: int, batch: int = 64) -> CaseResult:
    return CaseResult(
        CaseKey("train_step", "cpu", batch, mode=mode),
        samples_per_unit=batch,
        passes=[PassRecord(0, [seconds])],
        flops_per_sample=204_544,
        ops_per_step=ops,
    )


def test_peak_fraction_and_verdict_come_from_the_runs_own_measurements(small_run: Path) -> None:
    run: Run = load_run(small_run)
    run.peaks = {"cpu": Peaks(float32=100e9, bfloat16=400e9, op_floor_s=2e-6)}
    fast = _case("eager", 64 * 204_544 / 50e9, ops=40)  # 50 GFLOP/s: half the float32 peak
    assert peak_fraction(run, fast) == pytest.approx(0.5)
    assert verdict(run, fast) == "compute-bound"  # 40 ops x 2 us = 80 us of a 390 us step
    tiny = _case("eager", 100e-6, ops=40, batch=1)  # 80 us of ops in a 100 us step
    assert overhead_share(run, tiny) == pytest.approx(0.8) and verdict(run, tiny) == "overhead-bound"
    bf16 = _case("bf16", 64 * 204_544 / 50e9, ops=40)
    assert peak_fraction(run, bf16) == pytest.approx(50 / 400)  # set against the bfloat16 peak
    loader_bound = CaseResult(
        CaseKey("epoch", "cpu", 64, "torchvision"), samples_per_unit=6400,
        passes=[PassRecord(0, [1.0], data_seconds=[0.8], batches=100)], flops_per_sample=204_544, ops_per_step=40,
    )  # fmt: skip
    assert verdict(run, loader_bound) == "data-bound"  # 80% of the epoch waiting for the loader
    run.peaks = {}
    assert peak_fraction(run, fast) is None and verdict(run, fast) is None


def test_small_run_records_flops_ops_and_peaks(small_run: Path) -> None:
    run = load_run(small_run)
    peaks = run.peaks["cpu"]
    assert peaks.float32 is not None and peaks.float32 > 1e8
    assert peaks.op_floor_s is not None and peaks.op_floor_s > 0
    for case in run.cases:
        assert case.flops_per_sample == (101_632 if case.key.workload == "forward" else 204_544)
        assert case.ops_per_step is not None and case.ops_per_step > 0
        assert peak_fraction(run, case) is not None
    assert run.meters["cpu"].available in (True, False)


def _rapl(root: Path, packages: dict[int, int], wrap: int = 2**32) -> None:
    for index, microjoules in packages.items():
        domain = root / f"intel-rapl:{index}"
        (domain / f"intel-rapl:{index}:0").mkdir(parents=True, exist_ok=True)  # a sub-domain: not counted
        (domain / "name").write_text(f"package-{index}\n")
        (domain / "energy_uj").write_text(f"{microjoules}\n")
        (domain / "max_energy_range_uj").write_text(f"{wrap}\n")


def test_rapl_is_read_from_its_sysfs_files_and_unwrapped(tmp_path: Path) -> None:
    _rapl(tmp_path, {0: 5_000_000, 1: 7_000_000}, wrap=10_000_000)
    meter = cpu_meter(tmp_path)
    assert meter.available and "2 package" in (meter.source or "")
    assert [p.name for p in rapl_domains(tmp_path)] == ["intel-rapl:0", "intel-rapl:1"]
    start = meter.read()
    assert start == (5.0, 7.0)
    _rapl(tmp_path, {0: 6_000_000, 1: 1_000_000}, wrap=10_000_000)  # package 1 wrapped past 10 J
    # package 0 spent 1 J; package 1 went 7 J -> 10 J, wrapped, -> 1 J: 4 J
    assert meter.joules_between(start, meter.read()) == pytest.approx(5.0)


def test_no_rapl_is_a_reason_not_an_estimate(tmp_path: Path) -> None:
    meter = cpu_meter(tmp_path)
    assert not meter.available and meter.read() is None
    assert "no RAPL package domain" in (meter.reason or "")
    assert meter_for("cpu").facts().available in (True, False)


def test_energy_is_reported_only_for_timed_work_of_a_second_or_more() -> None:
    def case(seconds: float) -> CaseResult:
        record = PassRecord(
            0, [0.5], energy=EnergyRecord(joules=30.0 * seconds, seconds=seconds, source="RAPL")
        )
        return CaseResult(CaseKey("epoch", "cpu", 64, "resident"), samples_per_unit=1000, passes=[record])

    watts, per_thousand = energy_figures(case(ENERGY_MIN_WINDOW_S)) or (0, 0)
    assert watts == pytest.approx(30.0) and per_thousand == pytest.approx(
        30.0 * 1000 / 2000
    )  # 2,000 samples/s
    assert energy_figures(case(0.5)) is None


def test_an_unavailable_meter_reads_nothing() -> None:
    meter = EnergyMeter(None, "no counter")
    assert meter.read() is None and meter.joules_between(None, (1.0,)) is None


@cuda_test
def test_gpu_energy_comes_from_nvml_over_a_second_of_work() -> None:
    meter = meter_for("cuda:0")
    assert meter.available, meter.reason
    a = torch.randn(4096, 4096, device="cuda:0")
    torch.cuda.synchronize()
    start, begin = meter.read(), torch.cuda.Event(enable_timing=True)
    import time

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.5:
        a = (a @ a) / 4096
    torch.cuda.synchronize()
    joules = meter.joules_between(start, meter.read())
    assert joules is not None and joules / (time.perf_counter() - t0) > 20  # an H200 busy draws tens of watts
    del begin


@cuda_test
def test_the_profiler_counts_the_kernels_a_graph_replays_and_the_device_floor_is_measured() -> None:
    from bench.measure.kernels import count_kernels, kernel_floor
    from bench.measure.modes import GraphedTraining

    graphed = GraphedTraining(build_training("cuda:0"))
    images = torch.randn(64, 1, 28, 28, device="cuda:0")
    labels = torch.zeros(64, dtype=torch.long, device="cuda:0")
    graphed.step(images, labels)  # captured now, replayed below
    kernels = count_kernels(lambda: graphed.step(images, labels), "cuda:0")
    assert kernels is not None and kernels >= 8, kernels  # linear, relu, loss, backward, SGD: far more than 2
    assert count_kernels(lambda: None, "cpu") is None and kernel_floor("cpu") is None
    floor = kernel_floor("cuda:0")
    assert floor is not None and 1e-7 < floor < 2e-5, floor


@cuda_test
def test_gpu_peaks_include_tf32() -> None:
    peaks = measure_peaks("cuda:0", ("float32", "tfloat32"))
    assert (peaks.tfloat32 or 0) > (peaks.float32 or 0) > 1e12
    assert 0 < (peaks.op_floor_s or 0) < 1e-4


def test_the_peak_probe_hands_its_cached_gpu_memory_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe's largest matmul left GiB in the caching allocator, which the first case measured after
    it reported as its own: measure_peaks empties the cache of a CUDA device (here, a recording stand-in
    for torch.cuda.empty_cache, with the timing stubbed out: the call is what is tested)."""
    from bench.measure import efficiency

    emptied: list[bool] = []
    monkeypatch.setattr(efficiency, "matmul_peak", lambda device, name: (5e14, 16384))
    monkeypatch.setattr(efficiency, "op_floor", lambda device: 4e-6)
    monkeypatch.setattr(efficiency, "kernel_floor", lambda device: 2e-6)
    monkeypatch.setattr(efficiency, "synchronize", lambda device: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    peaks = measure_peaks("cuda:0", ("float32",))
    assert peaks.float32 == 5e14 and emptied == [True]
    emptied.clear()
    measure_peaks("cpu", ("float32",))
    assert emptied == [], "the CPU has no cache to empty"


@cuda_test
def test_gpu_peaks_leave_no_cached_memory_behind() -> None:
    torch.cuda.empty_cache()
    before = torch.cuda.memory_reserved(0)
    measure_peaks("cuda:0", ("float32", "bfloat16"))
    assert torch.cuda.memory_reserved(0) - before < 64 * 2**20, "the probe's matmul buffers stayed cached"


def test_the_checks_gpu_peaks_read_in_tflops(monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench check` printed an H200's peaks as `410,000 GFLOP/s`; now as the run's header does."""
    from bench.measure import efficiency, probes

    measured = Peaks(op_floor_s=4.2e-6, float32=5.1e13, float32_matmul_side=16384, tfloat32=4.1e14,
                     tfloat32_matmul_side=16384)  # fmt: skip
    monkeypatch.setattr(efficiency, "measure_peaks", lambda device, names: measured)
    text = probes.peak_text("cuda:0")
    assert (
        text
        == "float32 51 TFLOP/s (16384² matmul), tfloat32 410 TFLOP/s (16384² matmul); per-op floor 4.2 µs"
    )


def test_energy_on_a_mig_instance_says_why_there_is_none() -> None:
    """NVML answers Not Supported for a MIG instance's energy: it counts the whole GPU only. That is no
    pre-Volta GPU, which the reason used to say (an H200 in MIG mode, through the fake NVML seam)."""
    from bench.measure.energy import nvml_meter
    from bench.measure.memory import NvmlDevice
    from tests.fake_nvml import FakeGpu, FakeNvml

    nvml = FakeNvml([FakeGpu("GPU-aaaa", name="NVIDIA H200", mig=["MIG-bbbb", None])])
    gpu = nvml.nvmlDeviceGetHandleByIndex(0)
    instance = NvmlDevice(nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0), nvml)
    meter = nvml_meter(instance)
    assert (
        not meter.available and "MIG instance" in (meter.reason or "") and "Volta" not in (meter.reason or "")
    )
    whole = nvml_meter(NvmlDevice(gpu, nvml))
    assert whole.available and whole.read() == (123_456.789,)
