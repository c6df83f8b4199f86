"""Contention per pass: recorded schedstat readings through the /proc seam, the thresholds, the
fallback source, and what a contended case does to figures, verdicts and compare."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from bench.analysis.compare import compare_runs
from bench.analysis.metrics import CONTENDED, UNEXPLAINED, case_figures, speedup, verdict
from bench.core.keys import CaseKey
from bench.core.records import CONTENDED_WAIT_SHARE, OTHERS_MIN_CPUS, ContentionRecord, PassRecord
from bench.core.results import CaseResult, Peaks
from bench.env import contention
from bench.render.sections import efficiency_table, throughput_table
from bench.render.summary import summary_markdown
from tests.conftest import make_run


def _proc(root: Path, threads: dict[str, tuple[int, int]], steal_ticks: int = 0) -> Path:
    """A /proc laid out as Linux does: self/task/<tid>/schedstat (on-CPU ns, run-queue wait ns, slices)."""
    for tid, (run_ns, wait_ns) in threads.items():
        task = root / "self" / "task" / tid
        task.mkdir(parents=True, exist_ok=True)
        (task / "schedstat").write_text(f"{run_ns} {wait_ns} 42\n")
    (root / "stat").write_text(
        f"cpu  100 0 50 9000 10 0 5 {steal_ticks} 0 0\ncpu0 50 0 25 4500 5 0 2 0 0 0\n"
    )
    return root


def _reading(
    tmp_path: Path, threads: dict[str, tuple[int, int]], at: float, steal: int = 0
) -> contention.Reading:
    reading = contention.read(_proc(tmp_path / f"at{at}", threads, steal))
    return contention.Reading(at, reading.threads, reading.involuntary_switches, reading.steal_ticks)


@pytest.mark.parametrize(("wait_ms", "contended"), [(150, False), (250, True), (1500, True)])
def test_run_queue_wait_per_running_thread_decides(tmp_path: Path, wait_ms: int, contended: bool) -> None:
    """Two threads busy for 1 s each; a third (an idle pool thread) ran 1 ms and does not count."""
    before = _reading(tmp_path, {"1": (0, 0), "2": (0, 0), "3": (0, 0)}, at=10.0)
    after = _reading(tmp_path, {"1": (10**9, wait_ms * 10**6), "2": (10**9, 0), "3": (10**6, 0)}, at=11.0)
    record = contention.between(before, after, cpus=2)
    assert record is not None and record.source == "schedstat" and record.threads == 2
    assert record.wait_share == pytest.approx(wait_ms / 1000 / 2)
    assert record.contended is contended
    assert (record.wait_share > CONTENDED_WAIT_SHARE) is contended


def test_steal_time_alone_marks_a_pass(tmp_path: Path) -> None:
    before = _reading(tmp_path, {"1": (0, 0)}, at=0.0, steal=0)
    after = _reading(tmp_path, {"1": (10**9, 0)}, at=1.0, steal=int(0.3 * 2 * contention.TICKS_PER_S))
    record = contention.between(before, after, cpus=2)
    assert record is not None and record.steal_share == pytest.approx(0.3, abs=0.01) and record.contended


def test_without_schedstat_involuntary_switches_stand_in(tmp_path: Path) -> None:
    """A kernel without schedstat: the real psutil counter of this process is used, and said."""
    (tmp_path / "stat").write_text("cpu  1 2 3 4 5 6 7 8 9 10\n")
    watch = contention.Watch(proc=tmp_path)
    with watch:
        sum(i * i for i in range(200_000))
    record = watch.record
    assert record is not None and record.source == "ctx_switches" and record.involuntary_switches is not None
    busy = ContentionRecord("ctx_switches", wall_s=1.0, threads=1, involuntary_switches=400)
    assert busy.contended and not ContentionRecord("ctx_switches", 1.0, 1, involuntary_switches=5).contended


def test_no_source_at_all_is_no_record() -> None:
    nothing = contention.Reading(1.0, None, None, None)
    assert contention.between(nothing, contention.Reading(2.0, None, None, None)) is None


def test_a_real_pass_of_this_process_is_read_from_proc() -> None:
    if not Path("/proc/self/task").is_dir():
        pytest.skip("no /proc/self/task on this platform: the ctx_switches fallback is tested above")
    with contention.Watch() as watch:
        sum(i * i for i in range(300_000))
    record = watch.record
    assert record is not None and record.source == "schedstat" and record.wall_s > 0 and record.threads >= 1
    assert record.wait_s is not None and record.wait_s >= 0


@pytest.mark.parametrize(("others_cpu_s", "contended"), [(None, True), (0.05, False), (0.5, True)])
def test_a_wait_counts_only_when_other_processes_held_the_cpus(
    others_cpu_s: float | None, contended: bool
) -> None:
    """Threads that waited 60% of a pass: for a hog (0.5 CPU of others), or for nobody but this
    process's own DataLoader workers (0.05: the wait is the setting's cost, not a disturbance); where
    the others' time is unknown the wait decides alone, as before."""
    record = ContentionRecord("schedstat", 1.0, 2, wait_s=1.2, cpus=2, others_cpu_s=others_cpu_s)
    assert record.contended is contended
    assert record.self_inflicted is (others_cpu_s is not None and others_cpu_s < OTHERS_MIN_CPUS)
    switches = ContentionRecord("ctx_switches", 1.0, 1, involuntary_switches=400, others_cpu_s=others_cpu_s)
    assert switches.contended is contended


def _spin_and_report(seconds: float, connection: Connection) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    connection.send(time.process_time())


def test_the_process_tree_counts_its_children_live_and_ended() -> None:
    """Two worker processes burn CPU: one ends before the second reading, one is still alive; the
    tree's CPU time covers both, so their time is not charged to other processes."""
    context = multiprocessing.get_context("fork")
    before = contention.read()
    ended_end, ended_child = context.Pipe()
    live_end, live_child = context.Pipe()
    ended = context.Process(target=_spin_and_report, args=(0.3, ended_child))
    live = context.Process(target=_spin_and_report, args=(0.3, live_child))
    ended.start()
    live.start()
    ended_cpu = ended_end.recv()
    ended.join()
    live_cpu = live_end.recv()
    after = contention.read()  # `live` has reported but not been reaped
    live.join()
    assert before.tree_cpu_s is not None and after.tree_cpu_s is not None
    assert after.tree_cpu_s - before.tree_cpu_s >= 0.9 * (ended_cpu + live_cpu)
    record = contention.between(before, after)
    assert record is not None and record.others_cpu_s is not None and record.others_cpu_s >= 0


QUIET = ContentionRecord("schedstat", wall_s=1.0, threads=2, wait_s=0.02, cpus=2)
BUSY = ContentionRecord("schedstat", wall_s=1.0, threads=2, wait_s=1.2, cpus=2)


def _case(key: CaseKey, *passes: tuple[float, ContentionRecord | None], ops: int = 40) -> CaseResult:
    records = [PassRecord(i, [seconds] * 5, contention=c) for i, (seconds, c) in enumerate(passes)]
    return CaseResult(key, samples_per_unit=key.batch_size, passes=records, flops_per_sample=204_544,
                      ops_per_step=ops)  # fmt: skip


def test_the_figure_rests_on_the_clean_passes_and_a_case_of_contended_ones_is_marked() -> None:
    key = CaseKey("train_step", "cpu", 64)
    mixed = _case(key, (0.001, QUIET), (0.050, BUSY))
    assert not mixed.contended and mixed.median_s == pytest.approx(0.001)  # the busy pass is kept, not used
    ruined = _case(key, (0.050, BUSY), (0.040, BUSY))
    assert ruined.contended and ruined.median_s == pytest.approx(0.045)
    run = make_run(ruined)
    assert "‼" in throughput_table(run) and "~" not in throughput_table(run)
    figures = case_figures(run, ruined)
    assert figures.health == ["contended"] and figures.contended_passes == 2
    assert "CONTENDED: 1 of 1 cases" in summary_markdown(run)


def test_verdicts_need_evidence() -> None:
    """compute-bound only at 40% of the peak or more; below it, unexplained with the share left over."""
    peak = Peaks(float32=100e9, op_floor_s=1e-7)
    at_half = _case(CaseKey("train_step", "cpu", 64), (64 * 204_544 / 50e9, QUIET))
    at_tenth = _case(CaseKey("train_step", "cpu", 256), (256 * 204_544 / 10e9, QUIET))
    busy = _case(CaseKey("train_step", "cpu", 1024), (1024 * 204_544 / 50e9, BUSY))
    run = make_run(at_half, at_tenth, busy, peaks={"cpu": peak})
    assert verdict(run, at_half) == "compute-bound"
    assert verdict(run, at_tenth) == UNEXPLAINED
    assert case_figures(run, at_tenth).unexplained_share == pytest.approx(
        1 - 0.1 - 40 * 1e-7 / 5.236e-3, abs=0.01
    )
    assert verdict(run, busy) == CONTENDED
    table = efficiency_table(run) or ""
    assert "unexplained (90% of the step)" in table and "contended" in table
    above = _case(CaseKey("forward", "cpu", 64), (64 * 204_544 / 150e9, QUIET))
    assert case_figures(make_run(above, peaks={"cpu": peak}), above).health == ["above-peak"]


def test_contended_cases_are_left_out_of_speedups_and_compare() -> None:
    cpu = _case(CaseKey("train_step", "cpu", 64), (0.01, BUSY))
    gpu = _case(CaseKey("train_step", "cuda:0", 64), (0.001, QUIET))
    assert speedup(make_run(cpu, gpu), gpu) is None
    clean_cpu = _case(CaseKey("train_step", "cpu", 64), (0.01, QUIET), (0.011, QUIET))
    slowed = _case(CaseKey("train_step", "cpu", 64), (0.05, BUSY), (0.06, BUSY))
    (row,) = compare_runs(make_run(clean_cpu), make_run(slowed)).rows
    assert row.verdict == "contended in B: not compared"


def test_the_check_warns_when_other_work_will_share_the_cpus() -> None:
    from bench.env.check import PASS, WARN, load_lines

    cpu = {"torch_threads": 2, "usable_cpus": 2.0}
    quiet = load_lines({"cpu": cpu, "load": {"busy_processes": [], "probe_wait_share": 0.01}})
    assert [line.verdict for line in quiet] == [PASS]
    hog = {"busy_processes": [{"name": "python3", "cpu_percent": 99}], "probe_wait_share": 0.01}
    (line,) = load_lines({"cpu": cpu, "load": hog})
    assert line.verdict == WARN and "python3 (99%)" in line.detail and "--threads 1" in line.hint
    hidden = {"busy_processes": [], "probe_wait_share": 0.6}  # a container: the hog is invisible
    (line,) = load_lines({"cpu": cpu, "load": hidden})
    assert line.verdict == WARN and "waited 60%" in line.detail


def test_a_forward_slower_than_its_forward_backward_marks_both() -> None:
    forward = _case(CaseKey("forward", "cpu", 64), (0.010, QUIET))
    both = _case(CaseKey("forward_backward", "cpu", 64), (0.002, QUIET))
    step = _case(CaseKey("train_step", "cpu", 64), (0.003, QUIET))
    run = make_run(forward, both, step)
    assert case_figures(run, forward).health == [
        "inconsistent: forward slower than forward_backward", "inconsistent: forward slower than train_step",
    ]  # fmt: skip
    assert case_figures(run, both).health == ["inconsistent: forward slower than forward_backward"]
    assert case_figures(run, step).health == ["inconsistent: forward slower than train_step"]
    fine = make_run(_case(CaseKey("forward", "cpu", 64), (0.001, QUIET)), both, step)
    assert all(not case_figures(fine, case).health for case in fine.cases)
    # the header counts them, so a reader sees it before the tables
    assert "INCONSISTENT: 3 cases" in summary_markdown(run)
    assert "INCONSISTENT" not in summary_markdown(fine)


def test_retry_slots_measure_again_only_the_cases_without_a_clean_pass(tmp_path: Path) -> None:
    """The sweep's decision for the slots `--retry-contended` adds at the end of the planned passes."""
    from bench.core.plan import Options, is_retry, schedule
    from bench.engine.progress import Progress
    from bench.engine.sweep import Sweep

    keys = [CaseKey("forward", "cpu", 64), CaseKey("train_step", "cpu", 64), CaseKey("forward", "cpu", 1024)]
    options = Options(devices=("cpu",), batch_sizes=(64, 1024), workloads=("forward", "train_step"),
                      passes=2, retry_contended=1)  # fmt: skip
    items = schedule(keys, options)
    retries = [item for item in items if is_retry(item, options)]
    assert [item.key for item in retries] == keys and all(item.pass_index == 2 for item in retries)
    assert len(items) == 2 * len(keys) + len(retries)
    clean = _case(keys[0], (0.001, QUIET), (0.001, QUIET))  # both passes had their CPUs: no retry
    mixed = _case(keys[1], (0.001, QUIET), (0.05, BUSY))  # a contended pass is measured again
    run = make_run(clean, mixed)  # keys[2] never measured (failed before): nothing to measure again
    sweep = Sweep(run, tmp_path, None, options, keys, progress=Progress(items, 2, say=lambda _: None))  # type: ignore[arg-type]
    assert {item.key: sweep.decide(item) for item in retries} == {
        keys[0]: "done",
        keys[1]: "solo",
        keys[2]: "done",
    }
    ruined = _case(keys[1], (0.05, BUSY), (0.04, BUSY))
    sweep.run = make_run(clean, ruined)
    assert sweep.decide(retries[1]) == "solo"
    retried = _case(keys[1], (0.05, BUSY), (0.04, BUSY), (0.001, QUIET))  # the retry's pass is the clean one
    assert not retried.contended and retried.median_s == pytest.approx(0.001) and len(retried.passes) == 3
    no_retries = Options(devices=("cpu",), batch_sizes=(64,), workloads=("forward",), passes=2)
    assert not any(is_retry(item, no_retries) for item in schedule(keys, no_retries))


def test_the_cpu_clock_is_read_around_each_pass_and_the_lower_kept() -> None:
    """A CPU that slowed during the pass (2600 MHz before, 1200 after) records the lower clock, and a
    case shows its lowest pass; where the platform reports clocks, a real pass records one."""
    before = contention.Reading(0.0, {"1": (0, 0)}, None, 0, cpu_mhz=2600.0, cpu_max_mhz=3500.0)
    after = contention.Reading(1.0, {"1": (10**9, 0)}, None, 0, cpu_mhz=1200.0, cpu_max_mhz=3500.0)
    record = contention.between(before, after, cpus=1)
    assert record is not None and record.cpu_mhz == 1200.0 and record.cpu_max_mhz == 3500.0
    quick = replace(record, cpu_mhz=2600.0)
    case = _case(CaseKey("forward", "cpu", 64), (0.01, quick), (0.01, record))
    assert case_figures(make_run(case), case).cpu_mhz == 1200.0
    import psutil

    if not psutil.cpu_freq(percpu=True):
        pytest.skip("this platform reports no CPU clock: the reading stays empty")
    with contention.Watch() as watch:
        sum(i * i for i in range(100_000))
    assert watch.record is not None and watch.record.cpu_mhz is not None and watch.record.cpu_mhz > 0
