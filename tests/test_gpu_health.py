"""GPU health through the fake NVML seam: a throttling or shared GPU marks its cases and keeps them out
of findings, a clean one marks nothing, and `bench check` warns about what an administrator fixes."""

from __future__ import annotations

import pytest

from bench.analysis.findings import findings
from bench.analysis.metrics import case_figures
from bench.core.keys import CaseKey
from bench.core.records import DeviceHealthRecord, PassRecord
from bench.core.results import CaseResult, Peaks
from bench.env.check_cuda import preflight_lines
from bench.env.gpu_health import preflight, preflight_problems, reading, record_of
from bench.env.nvml import collect_nvml
from bench.env.verdicts import WARN
from bench.render.sections import throughput_table
from tests.conftest import cuda_test, make_run
from tests.fake_nvml import FakeNvml, healthy_h100

HW_THERMAL, IDLE = 0x40, 0x1


def _record(
    gpu_before: dict[str, object], gpu_after: dict[str, object], pid: int = 4242
) -> DeviceHealthRecord:
    before = FakeNvml([healthy_h100("GPU-1", **gpu_before)])  # type: ignore[arg-type]
    after = FakeNvml([healthy_h100("GPU-1", **gpu_after)])  # type: ignore[arg-type]
    readings = [reading(nvml, nvml.nvmlDeviceGetHandleByIndex(0), pid) for nvml in (before, after)]
    record = record_of(readings)
    assert record is not None and record.readings == 2
    return record


def test_a_clean_gpu_is_neither_throttled_nor_shared() -> None:
    record = _record({}, {})
    assert not record.throttled and not record.shared
    assert record.sm_clock_share == 1.0 and record.power_share == pytest.approx(400 / 700, abs=1e-4)


@pytest.mark.parametrize(
    ("after", "throttled", "shared"),
    [
        ({"clock_event_mask": HW_THERMAL}, True, False),  # thermal slowdown reported by the driver
        ({"sm_clock_mhz": 1400}, True, False),  # 71% of its maximum clock while busy
        ({"sm_clock_mhz": 600, "clock_event_mask": IDLE}, False, False),  # idle lowers the clock: fine
        ({"process_pids": [4242, 777]}, False, True),  # another process computes on it
        ({"process_pids": [4242]}, False, False),  # only this one
    ],
)
def test_throttling_and_sharing_are_read_around_a_pass(
    after: dict[str, object], throttled: bool, shared: bool
) -> None:
    record = _record({}, after)
    assert (record.throttled, record.shared) == (throttled, shared)


def _gpu_case(batch: int, health: DeviceHealthRecord | None, seconds: float = 1e-3) -> CaseResult:
    key = CaseKey("train_step", "cuda:0", batch)
    passes = [PassRecord(0, [seconds] * 5, device_health=health)]
    return CaseResult(key, samples_per_unit=batch, passes=passes, flops_per_sample=204_544, ops_per_step=40)


def test_a_throttled_case_is_marked_everywhere_and_no_finding_rests_on_it() -> None:
    hot = _record({}, {"clock_event_mask": HW_THERMAL})
    throttled = _gpu_case(65536, hot, seconds=65536 * 204_544 / 30e12)  # 60% of a 50 TFLOP/s peak
    clean = _gpu_case(32768, _record({}, {}), seconds=32768 * 204_544 / 30e12)
    run = make_run(throttled, clean, peaks={"cuda:0": Peaks(float32=50e12, op_floor_s=5e-6)})
    assert throttled.device_marks == ["throttled"] and clean.device_marks == []
    assert case_figures(run, throttled).health == ["throttled"]
    assert "†" in throughput_table(run)
    assert [f.case for f in findings(run)] == [clean.key]  # the throttled cell found nothing


def test_the_preflight_warns_about_what_makes_a_gpu_slow_or_wrong() -> None:
    sick = healthy_h100(
        "GPU-2", persistence_mode=0, power_limit_mw=450_000, pcie=(3, 5, 8, 16), ecc_uncorrected=2,
        remapped_rows=(0, 1, 1, 0), process_pids=[99],
    )  # fmt: skip
    nvml = FakeNvml([healthy_h100("GPU-1"), sick])
    facts = collect_nvml(nvml)
    assert preflight_problems(facts["devices"][0]["preflight"]) == []
    problems = [problem for problem, _hint in preflight_problems(facts["devices"][1]["preflight"])]
    assert len(problems) == 6
    assert any("persistence mode is off" in p for p in problems)
    assert any("450 W is below the default 700 W" in p for p in problems)
    assert any("gen 3 x8, of gen 5 x16" in p for p in problems)
    assert any("2 uncorrected ECC errors" in p for p in problems)
    assert any("1 other processes" in p for p in problems)
    lines = preflight_lines(facts)
    assert len(lines) == 6 and all(line.verdict == WARN and line.hint for line in lines)
    assert {line.name for line in lines} == {"gpu 1 health"}


def test_an_old_driver_that_answers_nothing_gives_no_warning_and_no_error() -> None:
    from tests.fake_nvml import FakeGpu

    nvml = FakeNvml([FakeGpu("GPU-3")])
    facts = preflight(nvml, nvml.nvmlDeviceGetHandleByIndex(0))
    assert preflight_problems(facts) == [] and facts["persistence_mode"] is None
    assert record_of([reading(nvml, nvml.nvmlDeviceGetHandleByIndex(0))]) == DeviceHealthRecord(1, [])


@cuda_test
def test_a_real_gpu_pass_records_its_health() -> None:
    import torch

    from bench.measure.health_watch import DeviceWatch

    with DeviceWatch("cuda:0") as watch:
        torch.ones(1024, 1024, device="cuda:0").sum().item()
    assert watch.record is not None and watch.record.readings == 2
    assert watch.record.sm_clock_share is None or 0 < watch.record.sm_clock_share <= 1.5
