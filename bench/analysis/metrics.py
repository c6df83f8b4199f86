"""Every figure derived from a run's stored samples, computed in one place.

`figures(run)` gives each case its `Figures`: throughput and spread, memory, the epoch's data share
and its ratio to as many train steps, speedup over the CPU, training to accuracy, efficiency against
the device's measured peak and the verdict, energy, and scaling across processes. The summary's
tables, results.csv, compare and fleet all read these, so a figure the summary shows is a column of
the CSV too. Only raw samples are stored; a better statistic later needs no re-run. Torch-free.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, replace

from bench.analysis.collectives import gradient_bus_bandwidth, link_share
from bench.analysis.health import cpu_mhz, health, others_cpus, run_queue_wait
from bench.analysis.training import median_accuracy_per_epoch, median_time_to_target, time_to_target
from bench.core.catalog import (
    COMPUTE_BOUND_SHARE,
    ENERGY_MIN_WINDOW_S,
    OVERHEAD_SHARE,
    Timing,
    precision_of,
    workload,
)
from bench.core.keys import CaseKey
from bench.core.plan import peak_key, solo_device
from bench.core.results import CaseResult, Peaks, Run

DATA_BOUND, OVERHEAD_BOUND, COMPUTE_BOUND = "data-bound", "overhead-bound", "compute-bound"
UNEXPLAINED, CONTENDED = "unexplained", "contended"


# --- epochs ------------------------------------------------------------------------------------------


def data_share(case: CaseResult) -> float | None:
    """Share of epoch time spent waiting for batches, over every timed epoch that recorded it."""
    if not case.ok:
        return None
    records = [r for r in case.passes if r.data_seconds is not None]
    total = sum(sum(r.samples_s) for r in records)
    return sum(sum(r.data_seconds or []) for r in records) / total if total else None


def first_batch_figures(case: CaseResult) -> tuple[float | None, float | None]:
    """(time to the first batch, its cost beyond a batch's usual wait: worker start-up at the epoch
    boundary), medians over the timed epochs; (None, None) where not recorded."""
    firsts = [s for r in case.passes for s in (r.first_batch_s or [])]
    if not case.ok or not firsts:
        return None, None
    waits = [d / r.batches for r in case.passes if r.batches for d in (r.data_seconds or [])]
    first = statistics.median(firsts)
    return first, max(0.0, first - statistics.median(waits)) if waits else None


def data_timers(case: CaseResult) -> list[str]:
    return sorted({r.data_timer for r in case.passes if r.data_timer})


def steps_per_epoch(case: CaseResult) -> float | None:
    """An epoch in train_step units: its samples over the batch size, so a ragged last batch counts by its
    size; across processes, each process's steps (their samples are the samples of all of them)."""
    if not case.samples_per_unit:
        return None
    return case.samples_per_unit / (case.key.batch_size * case.key.processes)


def paired_epoch_ratios(epoch: CaseResult, step: CaseResult) -> list[float]:
    """Per epoch: its seconds over as many train_steps, timed by the steps measured around it.

    Inside a pass the step cases run before the epochs, so the steps of the epoch's own pass were
    measured just before it and those of the next pass just after it: the mean of the two cancels a
    machine whose speed drifts steadily (the last pass has only the steps before it).
    """
    steps = steps_per_epoch(epoch)
    step_means = {r.index: statistics.fmean(r.samples_s) for r in step.passes}
    if not steps:
        return []
    ratios = []
    for record in epoch.passes:
        around = [step_means[i] for i in (record.index, record.index + 1) if i in step_means]
        if record.index in step_means:
            ratios += [seconds / (steps * statistics.fmean(around)) for seconds in record.samples_s]
    return ratios


def epoch_vs_steps(run: Run, case: CaseResult) -> float | None:
    """Epoch time over the time of as many `train_step`s (one per batch, the last by its size).

    The steps enter with their mean, not their median: an epoch's time is a sum that includes every
    stall of the machine, and so is a mean. Each epoch is set against the steps measured around it
    (`paired_epoch_ratios`) and the median of those ratios is returned, so a slow stretch of the
    machine that hits one pass does not decide it; where no pass pairs up, the epochs' median over
    the mean of all the steps.
    """
    step = run.case(replace(case.key, workload="train_step", loader=None))
    steps = steps_per_epoch(case)
    if not case.ok or step is None or not step.ok or not steps or not case.median_s:
        return None
    paired = paired_epoch_ratios(case, step)
    if paired:
        return statistics.median(paired)
    return case.median_s / (steps * statistics.fmean(step.samples_s))


# --- speed, efficiency, energy -----------------------------------------------------------------------


def speedup(run: Run, case: CaseResult) -> float | None:
    """Samples/s over the CPU's, same workload and batch size (the CPU at torch's own thread count)."""
    cpu = run.case(replace(case.key, device="cpu", threads=None))
    if not case.ok or cpu is None or not cpu.ok or not cpu.samples_per_s or not case.samples_per_s:
        return None
    if case.contended or cpu.contended:
        return None  # a figure measured while other work held the CPUs is no base for a ratio
    return case.samples_per_s / cpu.samples_per_s


def peaks_for(run: Run, key: CaseKey) -> Peaks | None:
    return run.peaks.get(peak_key(key.device, key.threads))


def flops_per_s(case: CaseResult) -> float | None:
    """Achieved model FLOP/s: the counted FLOPs per sample times the samples per second measured."""
    rate = case.measured_rate
    return case.flops_per_sample * rate if case.flops_per_sample and rate else None


def peak_of(run: Run, case: CaseResult) -> float | None:
    """The matmul peak measured in this run on this device, in the precision the case's mode computes in."""
    peaks = peaks_for(run, case.key)
    return peaks.flops(precision_of(case.key.mode)) if peaks is not None else None


def peak_fraction(run: Run, case: CaseResult) -> float | None:
    achieved, peak = flops_per_s(case), peak_of(run, case)
    return achieved / peak if achieved and peak else None


def step_seconds(case: CaseResult) -> float | None:
    """The time of one step (or call): per call for rounds, an epoch's time over its steps otherwise."""
    if case.median_s is None:
        return None
    if workload(case.key.workload).in_rounds:
        return case.median_s
    steps = steps_per_epoch(case)
    return case.median_s / steps if steps else None


def overhead_share(run: Run, case: CaseResult) -> float | None:
    """How much of a step its launches explain: the op count times the device's per-op floor (host
    side) or, on a GPU, the kernel count times its per-kernel floor (device side), whichever is more.
    A CUDA graph replays many kernels as one or two ops, and compiled code's kernels are no ATen ops."""
    peaks, seconds = peaks_for(run, case.key), step_seconds(case)
    if peaks is None or not seconds:
        return None
    pairs = ((case.ops_per_step, peaks.op_floor_s), (case.kernels_per_step, peaks.kernel_floor_s))
    explained = [count * floor / seconds for count, floor in pairs if count is not None and floor is not None]
    return max(explained, default=None)


def verdict(run: Run, case: CaseResult) -> str | None:
    """What explains most of a step, on evidence only: `contended` when the case's passes waited for
    CPUs; waiting for data (epochs); the per-op floor times the op count; the arithmetic, only when
    the step reaches COMPUTE_BOUND_SHARE of the measured peak; else `unexplained`. None where there is
    nothing to judge by."""
    if case.contended:
        return CONTENDED
    waiting = data_share(case) if not workload(case.key.workload).in_rounds else None
    if waiting is not None and waiting >= OVERHEAD_SHARE:
        return DATA_BOUND
    share = overhead_share(run, case)
    if share is None:
        return None
    if share >= OVERHEAD_SHARE:
        return OVERHEAD_BOUND
    fraction = peak_fraction(run, case)
    if fraction is not None and COMPUTE_BOUND_SHARE <= fraction <= 1:
        return COMPUTE_BOUND
    return UNEXPLAINED


def unexplained_share(run: Run, case: CaseResult) -> float | None:
    """The share of a step neither the arithmetic at peak nor ops x floor accounts for."""
    share, fraction = overhead_share(run, case), peak_fraction(run, case)
    if share is None or fraction is None:
        return None
    return max(0.0, 1 - share - fraction)


def energy_figures(case: CaseResult) -> tuple[float, float] | None:
    """(mean watts, joules per 1,000 samples) over the passes' timed work, when it lasted at least 1 s."""
    records = [r.energy for r in case.passes if r.energy is not None]
    seconds = sum(r.seconds for r in records)
    rate = case.measured_rate
    if not records or seconds < ENERGY_MIN_WINDOW_S or not rate:
        return None
    watts = sum(r.joules for r in records) / seconds
    return watts, watts * 1000 / rate


# --- across processes ----------------------------------------------------------------------------


def one_process_case(run: Run, case: CaseResult) -> CaseResult | None:
    """The one-process case a case across processes is set against: same workload, batch and threads."""
    key = replace(case.key, device=solo_device(case.key.device), world_size=1, side_by_side=1)
    return run.case(key)


def scaling_efficiency(run: Run, case: CaseResult) -> float | None:
    """throughput(N) / (N × throughput(1)), the one-process figure from the same run."""
    solo = one_process_case(run, case)
    if case.key.processes == 1 or not case.ok or solo is None or not solo.samples_per_s:
        return None
    return (case.samples_per_s or 0) / (case.key.processes * solo.samples_per_s) or None


def comm_share(case: CaseResult) -> float | None:
    """The gradient all-reduce alone, as a share of a data-parallel step."""
    comm = [r.comm_s for r in case.passes if r.comm_s is not None]
    seconds = step_seconds(case)
    return statistics.median(comm) / seconds if comm and seconds else None


def per_rank_rates(case: CaseResult) -> list[float]:
    """Each rank's own samples/s (its share of the samples over its own median time)."""
    records = [r for r in case.passes if r.per_rank_s]
    if not records or not case.samples_per_unit:
        return []
    ranks = len(records[0].per_rank_s or [])
    share = case.samples_per_unit / ranks
    return [
        share / statistics.median([x for r in records for x in (r.per_rank_s or [])[rank]])
        for rank in range(ranks)
    ]


def parallel_kind(key: CaseKey) -> str | None:
    if key.world_size > 1:
        return "data-parallel"
    return "side by side" if key.side_by_side > 1 else None


# --- every figure of a case, in one record ---------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Every derived figure of one case in its run; None where it does not apply or cannot be known.

    The field names are results.csv's column names (lists are joined there with `; `).
    """

    samples_per_s: float | None
    measured_samples_per_s: float | None  # whatever the status (an invalid case shows its figures)
    median_s: float | None
    iqr_s: float | None
    spread: float | None
    noisy: bool
    n: int
    passes: int
    host_rss_start_bytes: int | None
    host_rss_peak_bytes: int | None
    host_growth_bytes: int | None
    device_baseline_allocated_bytes: int | None
    device_own_peak_bytes: int | None
    device_peak_allocated_bytes: int | None
    device_peak_reserved_bytes: int | None
    nvml_used_bytes: int | None
    data_share: float | None
    data_timer: list[str]
    first_batch_s: float | None  # epochs: from the start to the first batch
    epoch_boundary_s: float | None  # epochs: that beyond a batch's usual wait (worker start-up)
    epoch_vs_train_steps: float | None
    speedup_vs_cpu: float | None
    final_test_accuracy: float | None
    runs: int | None
    runs_reaching_target: int | None
    median_seconds_to_target: float | None
    seconds_to_target_per_run: list[float | None]
    train_seconds_median: float | None
    test_accuracy_per_epoch: list[float]
    flops_per_sample: int | None
    parameters: int | None
    flops_per_s: float | None
    peak_fraction: float | None
    ops_per_step: int | None
    overhead_share: float | None
    bound_by: str | None
    unexplained_share: float | None
    health: list[str]  # contended, above-peak: figures not to be trusted
    contended_passes: int
    run_queue_wait: float | None  # median share of the time the case's threads waited for a CPU
    others_cpus: float | None  # median CPUs' worth other processes used beside its passes
    cpu_mhz: float | None  # the lowest CPU clock read around its passes
    compile_s: float | None
    recompiles: int | None
    watts: float | None
    joules_per_1000_samples: float | None
    validation: list[str]
    parallel: str | None  # data-parallel or side by side
    backend: str | None
    nnodes: int | None
    scaling_efficiency: float | None
    comm_share: float | None
    all_reduce_bus_bytes_per_s: float | None  # the gradient all-reduce as nccl-tests' bus bandwidth
    all_reduce_link_share: float | None  # that over a large all-reduce's between the same ranks
    per_process_samples_per_s: list[float]


def host_growth(case: CaseResult) -> int | None:
    """The largest rise of host RSS within a pass."""
    rises = [r.memory.host_rss_peak_bytes - r.memory.host_rss_start_bytes for r in case.passes if r.memory]
    return max(rises, default=None)


def case_figures(run: Run, case: CaseResult) -> Figures:
    """The figures of one case; those of a failed case are only what it measured before failing."""
    timing = workload(case.key.workload).timing
    first_batch, boundary = first_batch_figures(case)
    trained = timing is Timing.RUNS and case.ok and not run.dataset.synthetic
    target = run.options.target_accuracy
    energy = energy_figures(case) if case.ok else None
    reached, times = time_to_target(case, target) if trained else (None, [])
    return Figures(
        samples_per_s=case.samples_per_s,
        measured_samples_per_s=case.measured_rate,
        median_s=case.median_s,
        iqr_s=case.iqr_s,
        spread=case.spread,
        noisy=case.noisy,
        n=case.n,
        passes=len(case.passes),
        host_rss_start_bytes=case.peak("host_rss_start_bytes"),
        host_rss_peak_bytes=case.peak("host_rss_peak_bytes"),
        host_growth_bytes=host_growth(case),
        device_baseline_allocated_bytes=case.peak("device_baseline_allocated_bytes"),
        device_own_peak_bytes=case.own_device_peak_bytes,
        device_peak_allocated_bytes=case.peak("device_peak_allocated_bytes"),
        device_peak_reserved_bytes=case.peak("device_peak_reserved_bytes"),
        nvml_used_bytes=case.peak("nvml_used_bytes"),
        data_share=data_share(case) if timing is Timing.EPOCHS else None,
        data_timer=data_timers(case) if timing is Timing.EPOCHS and case.ok else [],
        first_batch_s=first_batch,
        epoch_boundary_s=boundary,
        epoch_vs_train_steps=epoch_vs_steps(run, case) if timing is Timing.EPOCHS else None,
        speedup_vs_cpu=speedup(run, case) if case.key.device != "cpu" else None,
        final_test_accuracy=case.final_accuracy if trained else None,
        runs=len(case.runs) if timing is Timing.RUNS else None,
        runs_reaching_target=reached,
        median_seconds_to_target=median_time_to_target(case, target) if trained else None,
        seconds_to_target_per_run=times,
        train_seconds_median=(
            statistics.median(sum(r.samples_s) for r in case.runs) if case.ok and case.runs else None
        ),
        test_accuracy_per_epoch=median_accuracy_per_epoch(case) if trained else [],
        flops_per_sample=case.flops_per_sample,
        parameters=case.parameters,
        flops_per_s=flops_per_s(case) if case.ok else None,
        peak_fraction=peak_fraction(run, case) if case.ok else None,
        ops_per_step=case.ops_per_step,
        overhead_share=overhead_share(run, case),
        bound_by=verdict(run, case) if case.ok else None,
        unexplained_share=unexplained_share(run, case)
        if case.ok and verdict(run, case) == UNEXPLAINED
        else None,
        health=health(run, case, peak_fraction(run, case) if case.ok else None),
        contended_passes=sum(r.contended for r in case.passes),
        run_queue_wait=run_queue_wait(case),
        others_cpus=others_cpus(case),
        cpu_mhz=cpu_mhz(case),
        compile_s=case.compile_s,
        recompiles=case.recompiles if case.passes else None,
        watts=energy[0] if energy else None,
        joules_per_1000_samples=energy[1] if energy else None,
        validation=[("passed " if v.passed else "FAILED ") + v.check for v in case.validations],
        parallel=parallel_kind(case.key),
        backend=case.backend,
        nnodes=case.nnodes,
        scaling_efficiency=scaling_efficiency(run, case),
        comm_share=comm_share(case) if case.key.world_size > 1 else None,
        all_reduce_bus_bytes_per_s=gradient_bus_bandwidth(case),
        all_reduce_link_share=link_share(run, case),
        per_process_samples_per_s=per_rank_rates(case) if case.key.processes > 1 else [],
    )


def figures(run: Run, cases: Iterable[CaseResult] | None = None) -> dict[CaseKey, Figures]:
    """The figures of every case of `run` (or of `cases`, cases of it)."""
    return {case.key: case_figures(run, case) for case in (run.cases if cases is None else cases)}
