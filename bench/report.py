"""Results -> tables for people (Markdown, console) and rows for machines (CSV). Never measures.

Everything shown is derived here from the pass records in results.json, so `bench report`
re-renders a run (finished or partial) exactly as `bench run` rendered it. Rows are the case's
dimensions (workload, loader, device, and mode, threads or processes where the run varies them),
columns its batch sizes.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tabulate import tabulate

from bench.catalog import (
    COUNTING_RULE,
    ENERGY_MIN_WINDOW_S,
    EPOCHS,
    MIB,
    OVERHEAD_SHARE,
    RUNS,
    WORKLOADS,
    dataset_display_name,
    precision_of,
    workload,
)
from bench.check import CheckReport
from bench.plan import CaseKey, peak_key, solo_device
from bench.results import CaseResult, PassRecord, Run, write_atomic
from bench.stats import NOISY_SPREAD, QUARTILE_METHOD

SUMMARY_FILE = "summary.md"
CSV_FILE = "results.csv"
NOISY_MARK = " ~"
STATUS_CELL = {"oom": "OOM", "error": "error", "skipped": "skipped", "invalid": "invalid"}
BEST_MARK = " ★"
# dimensions beyond workload, loader and device that get a column when a run varies them
EXTRA_DIMENSIONS = (
    ("mode", "mode", "eager"),
    ("threads", "threads", None),
    ("world_size", "processes", 1),
    ("side_by_side", "side by side", 1),
)

Cases = dict[CaseKey, CaseResult]


# --- units for people ------------------------------------------------------------------------------


def fmt_rate(value: float | None) -> str:
    """Samples per second with three significant digits and k/M: `1.23M`, `45.6k`, `789`."""
    if value is None or not math.isfinite(value):
        return "–"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def fmt_seconds(value: float | None) -> str:
    """Three significant digits in a unit that fits: `41 ns`, `8.2 µs`, `0.152 ms`... `15.4 s`."""
    if value is None or not math.isfinite(value):
        return "–"
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-4:
        return f"{value * 1e3:.3g} ms"
    if value >= 1e-7:
        return f"{value * 1e6:.3g} µs"
    return f"{value * 1e9:.3g} ns"


def fmt_mib(value: int | None) -> str:
    return "–" if value is None else f"{value / MIB:,.1f}"


def fmt_percent(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value * 100:.1f}%"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def status_cell(case: CaseResult) -> str:
    return STATUS_CELL.get(case.status, case.status)


def rate_cell(case: CaseResult | None) -> str:
    """A throughput cell: the number, `~` when noisy, or OOM/error/skipped/invalid: never a number for those."""
    if case is None:
        return ""
    if not case.ok:
        return status_cell(case)
    return fmt_rate(case.samples_per_s) + (NOISY_MARK if case.noisy else "")


# --- facts from env, read defensively (a results file may have been edited by hand) ---------------


def fact(env: Any, *path: str) -> Any:
    """The value at `path` in nested dicts, or None where a level is missing or not a dict."""
    value = env
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def fact_text(env: Any, *path: str, missing: str = "?") -> str:
    value = fact(env, *path)
    return missing if value is None or isinstance(value, (dict, list)) else str(value)


def fact_number(env: Any, *path: str) -> float | None:
    value = fact(env, *path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def environment_line(env: Any) -> str:
    """One line for table headers: torch build, CPU, threads, GPUs."""
    devices = fact(env, "cuda", "devices")
    names = [fact_text(d, "name") for d in devices] if isinstance(devices, list) else []
    image = fact(env, "container", "image")
    where = f"; container image {image}" if isinstance(image, str) else ""
    return (
        f"torch {fact_text(env, 'torch', 'version')} ({fact_text(env, 'torch', 'build')}), "
        f"torchvision {fact_text(env, 'torchvision', 'version', missing='unavailable')}, "
        f"Python {fact_text(env, 'python', 'version')}; CPU {fact_text(env, 'cpu', 'model')} "
        f"({fact_text(env, 'cpu', 'usable_cpus')} usable CPUs, {fact_text(env, 'cpu', 'torch_threads')} torch "
        f"threads); GPUs: {', '.join(names) or 'none'}{where}"
    )


# --- derived values ----------------------------------------------------------------------------------


def index_cases(run: Run) -> Cases:
    return {case.key: case for case in run.cases}


def data_share(case: CaseResult) -> float | None:
    """Share of epoch time spent waiting for batches, over every timed epoch that recorded it."""
    if not case.ok:
        return None
    records = [r for r in case.passes if r.data_seconds is not None]
    total = sum(sum(r.samples_s) for r in records)
    return sum(sum(r.data_seconds or []) for r in records) / total if total else None


def data_timers(case: CaseResult) -> set[str]:
    return {r.data_timer for r in case.passes if r.data_timer}


def steps_per_epoch(case: CaseResult) -> float | None:
    """An epoch in train_step units: its samples over the batch size, so a ragged last batch counts by its
    size; across processes, each process's steps (their samples are the samples of all of them)."""
    if not case.samples_per_unit:
        return None
    return case.samples_per_unit / (case.batch_size * max(case.world_size, case.side_by_side))


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


def epoch_vs_steps(case: CaseResult, cases: Cases) -> float | None:
    """Epoch time over the time of as many `train_step`s (one per batch, the last by its size).

    The steps enter with their mean, not their median: an epoch's time is a sum that includes every
    stall of the machine, and so is a mean. Each epoch is set against the steps measured around it
    (`paired_epoch_ratios`) and the median of those ratios is returned, so a slow stretch of the
    machine that hits one pass does not decide it; where no pass pairs up, the epochs' median over
    the mean of all the steps.
    """
    step = cases.get(replace(case.key, workload="train_step", loader=None))
    steps = steps_per_epoch(case)
    if not case.ok or step is None or not step.ok or not steps or not case.median_s:
        return None
    paired = paired_epoch_ratios(case, step)
    if paired:
        return statistics.median(paired)
    return case.median_s / (steps * statistics.fmean(step.samples_s))


def run_time_to_target(record: PassRecord, target: float) -> tuple[int | None, float | None]:
    """(epochs, training seconds) until a run's test accuracy first reaches `target`; (None, None) if never."""
    elapsed = 0.0
    for epoch, (seconds, accuracy) in enumerate(
        zip(record.samples_s, record.test_accuracy or [], strict=False), 1
    ):
        elapsed += seconds
        if accuracy >= target:
            return epoch, elapsed
    return None, None


def time_to_target(case: CaseResult, target: float) -> tuple[int, list[float | None]]:
    """How many training runs reached `target`, and each run's training seconds to it (None: never)."""
    times = [run_time_to_target(record, target)[1] for record in case.runs]
    return sum(t is not None for t in times), times


def median_time_to_target(case: CaseResult, target: float) -> float | None:
    """The median over the runs that reached the target; the others are counted, not hidden."""
    reached = [t for t in time_to_target(case, target)[1] if t is not None]
    return statistics.median(reached) if reached else None


def median_accuracy_per_epoch(case: CaseResult) -> list[float]:
    curves = [r.test_accuracy for r in case.runs if r.test_accuracy]
    return [statistics.median(values) for values in zip(*curves, strict=False)] if curves else []


def speedup(case: CaseResult, cases: Cases) -> float | None:
    cpu = cases.get(replace(case.key, device="cpu", threads=None))
    if not case.ok or cpu is None or not cpu.ok or not cpu.samples_per_s or not case.samples_per_s:
        return None
    return case.samples_per_s / cpu.samples_per_s


def peaks_for(run: Run, case: CaseResult) -> dict[str, Any] | None:
    peaks = fact(run.env, "peaks", peak_key(case.device, case.threads))
    return peaks if isinstance(peaks, dict) else None


def flops_per_s(case: CaseResult) -> float | None:
    """Achieved model FLOP/s: the counted FLOPs per sample times the samples per second measured."""
    rate = case.measured_rate
    return case.flops_per_sample * rate if case.flops_per_sample and rate else None


def peak_of(run: Run, case: CaseResult) -> float | None:
    """The matmul peak measured in this run on this device, in the precision the case's mode computes in."""
    return fact_number(peaks_for(run, case), precision_of(case.mode))


def peak_fraction(run: Run, case: CaseResult) -> float | None:
    achieved, peak = flops_per_s(case), peak_of(run, case)
    return achieved / peak if achieved and peak else None


def step_seconds(case: CaseResult) -> float | None:
    """The time of one step (or call): per call for rounds, an epoch's time over its steps otherwise."""
    if case.median_s is None:
        return None
    if workload(case.workload).in_rounds:
        return case.median_s
    steps = steps_per_epoch(case)
    return case.median_s / steps if steps else None


def overhead_share(run: Run, case: CaseResult) -> float | None:
    """How much of a step its op count times the device's per-op floor explains."""
    floor = fact_number(peaks_for(run, case), "op_floor_s")
    seconds = step_seconds(case)
    if floor is None or not seconds or case.ops_per_step is None:
        return None
    return case.ops_per_step * floor / seconds


def verdict(run: Run, case: CaseResult) -> str:
    """What explains most of a step: waiting for data (epochs), the per-op floor times the op count, or
    else the arithmetic itself."""
    waiting = data_share(case) if not workload(case.workload).in_rounds else None
    if waiting is not None and waiting >= OVERHEAD_SHARE:
        return "data-bound"
    share = overhead_share(run, case)
    if share is None:
        return "–"
    return "overhead-bound" if share >= OVERHEAD_SHARE else "compute-bound"


def energy_figures(case: CaseResult) -> tuple[float, float] | None:
    """(mean watts, joules per 1,000 samples) over the passes' timed work, when it lasted at least 1 s."""
    records = [r.energy for r in case.passes if r.energy is not None]
    seconds = sum(r.seconds for r in records)
    rate = case.measured_rate
    if not records or seconds < ENERGY_MIN_WINDOW_S or not rate:
        return None
    watts = sum(r.joules for r in records) / seconds
    return watts, watts * 1000 / rate


def energy_cell(run: Run, case: CaseResult) -> str:
    figures = energy_figures(case)
    if figures is not None:
        return f"{figures[1]:.3g} J ({figures[0]:.0f} W)"
    if fact(run.env, "energy", case.device, "available") is True:
        return "timed work < 1 s"
    return "n/a"


# --- tables ------------------------------------------------------------------------------------------


def _ordered(values: Iterable[Any], order: Sequence[Any] = ()) -> list[Any]:
    unique = list(dict.fromkeys(values))
    return sorted(
        unique, key=lambda value: (order.index(value) if value in order else len(order), str(value))
    )


def _devices(run: Run) -> list[str]:
    return _ordered((c.device for c in run.cases), ["cpu"])


def _batch_sizes(run: Run) -> list[int]:
    return sorted({c.batch_size for c in run.cases})


def _varied(run: Run) -> list[tuple[str, str, Any]]:
    """The extra dimensions this run varies (mode, threads, processes): they get a column."""
    return [dim for dim in EXTRA_DIMENSIONS if any(getattr(c, dim[0]) != dim[2] for c in run.cases)]


def _case_order(run: Run) -> Callable[[CaseResult], tuple[Any, ...]]:
    devices = _devices(run)
    modes = list(run.options.modes)
    return lambda c: (
        WORKLOADS.index(c.workload) if c.workload in WORKLOADS else 99,
        c.loader or "",
        devices.index(c.device),
        c.threads or 0,
        c.world_size,
        c.side_by_side,
        modes.index(c.mode) if c.mode in modes else len(modes),
        c.batch_size,
    )


def _dimension_cells(case: CaseResult, varied: list[tuple[str, str, Any]]) -> list[str]:
    cells = []
    for name, _header, default in varied:
        value = getattr(case, name)
        cells.append("default" if value is None and default is None else str(value))
    return cells


def grid(
    run: Run,
    cell: Callable[[CaseResult], str],
    include: Callable[[CaseResult], bool] = lambda case: True,
    fmt: str = "github",
) -> str:
    """One row per workload, loader, device (and varied dimension), one column per batch size."""
    varied = _varied(run)
    sizes = _batch_sizes(run)
    rows: dict[tuple[Any, ...], list[str]] = {}
    for case in sorted((c for c in run.cases if include(c)), key=_case_order(run)):
        row = rows.setdefault(
            (case.workload, case.loader, case.device, *[getattr(case, d[0]) for d in varied]),
            [case.workload, case.loader or "–", case.device, *_dimension_cells(case, varied)]
            + [""] * len(sizes),
        )
        row[3 + len(varied) + sizes.index(case.batch_size)] = cell(case)
    headers = ["workload", "loader", "device", *[d[1] for d in varied], *[f"batch {s}" for s in sizes]]
    return tabulate(list(rows.values()), headers=headers, tablefmt=fmt, disable_numparse=True)


def throughput_table(run: Run, fmt: str = "github") -> str:
    return grid(run, rate_cell, fmt=fmt)


def speedup_table(run: Run, fmt: str = "github") -> str | None:
    if "cpu" not in _devices(run) or all(d == "cpu" for d in _devices(run)):
        return None
    cases = index_cases(run)
    return grid(
        run,
        lambda case: fmt_ratio(speedup(case, cases)) if case.ok else rate_cell(case),
        include=lambda case: case.device != "cpu",
        fmt=fmt,
    )


def epoch_table(run: Run, fmt: str = "github") -> str | None:
    epochs = [c for c in run.cases if workload(c.workload).timing == EPOCHS]
    if not epochs:
        return None
    cases, varied = index_cases(run), _varied(run)
    rows = []
    for case in sorted(epochs, key=_case_order(run)):
        start = [case.loader, case.device, *_dimension_cells(case, varied), case.batch_size]
        if not case.ok:
            rows.append([*start, rate_cell(case), "", "", "", "", "", case.n])
            continue
        rows.append(
            [
                *start,
                fmt_seconds(case.median_s),
                rate_cell(case),
                fmt_percent(data_share(case)),
                ", ".join(sorted(data_timers(case))),
                fmt_ratio(epoch_vs_steps(case, cases)),
                fmt_percent(case.spread),
                case.n,
            ]
        )
    headers = ["loader", "device", *[d[1] for d in varied], "batch", "s/epoch", "samples/s", "data share",
               "data timed by", "vs train_steps", "spread", "n"]  # fmt: skip
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def train_table(run: Run, fmt: str = "github") -> str | None:
    trains = [c for c in run.cases if workload(c.workload).timing == RUNS]
    if not trains:
        return None
    target = run.options.target_accuracy
    synthetic = run.dataset.synthetic
    varied = _varied(run)
    rows = []
    for case in sorted(trains, key=_case_order(run)):
        start = [case.device, *_dimension_cells(case, varied), case.batch_size, case.loader]
        if not case.ok:
            rows.append([*start, rate_cell(case), *[""] * 8])
            continue
        reached, times = time_to_target(case, target)
        epochs = len(case.runs[0].samples_s) if case.runs else 0
        if synthetic:
            accuracy, reached_text, per_run, median_text, curve = (
                "not meaningful",
                "–",
                "–",
                "–",
                "synthetic data",
            )
        else:
            accuracy = fmt_percent(case.final_accuracy)
            reached_text = f"{reached} of {len(times)}"
            per_run = ", ".join("not reached" if t is None else fmt_seconds(t) for t in times)
            median_text = fmt_seconds(median_time_to_target(case, target))
            curve = " ".join(f"{value * 100:.1f}" for value in median_accuracy_per_epoch(case))
        rows.append(
            [
                *start,
                epochs,
                accuracy,
                reached_text,
                median_text,
                per_run,
                fmt_seconds(statistics.median(sum(r.samples_s) for r in case.runs)),
                rate_cell(case),
                curve,
            ]
        )
    headers = [
        "device", *[d[1] for d in varied], "batch", "loader", "epochs", "final acc (median)",
        f"runs reaching {target:.0%}", "time to target (median)", "time to target per run",
        "train time (median)", "samples/s", "test acc % per epoch (median over runs)",
    ]  # fmt: skip
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def one_process_case(case: CaseResult, cases: Cases) -> CaseResult | None:
    """The one-process case a case across processes is set against: same workload, batch and threads."""
    return cases.get(replace(case.key, device=solo_device(case.device), world_size=1, side_by_side=1))


def processes(case: CaseResult) -> int:
    return max(case.world_size, case.side_by_side)


def scaling_efficiency(case: CaseResult, cases: Cases) -> float | None:
    """throughput(N) / (N × throughput(1)), the one-process figure from the same run."""
    solo = one_process_case(case, cases)
    if not case.ok or solo is None or not solo.samples_per_s or not case.samples_per_s:
        return None
    return case.samples_per_s / (processes(case) * solo.samples_per_s)


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


def scaling_table(run: Run, fmt: str = "github") -> str | None:
    """Cases across processes against their one-process case: total samples/s, efficiency, communication."""
    spread = [c for c in run.cases if processes(c) > 1]
    if not spread:
        return None
    cases = index_cases(run)
    rows = []
    for case in sorted(spread, key=_case_order(run)):
        solo = one_process_case(case, cases)
        kind = "data-parallel" if case.world_size > 1 else "side by side"
        rates = per_rank_rates(case)
        rows.append(
            [
                case.workload, case.device, case.batch_size, kind, processes(case), case.nnodes or "–",
                case.threads or "default", rate_cell(solo), rate_cell(case), fmt_percent(scaling_efficiency(case, cases)),
                fmt_percent(comm_share(case)) if case.world_size > 1 else "",
                " / ".join(fmt_rate(rate) for rate in rates) or "–",
            ]
        )  # fmt: skip
    headers = ["workload", "device", "batch per process", "how", "processes", "nodes", "threads each",
               "1 process samples/s", "all processes samples/s", "scaling efficiency", "all-reduce share",
               "per process samples/s"]  # fmt: skip
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def _varies_modes(run: Run) -> bool:
    return len({case.mode for case in run.cases}) > 1


def modes_table(run: Run, fmt: str = "github") -> str | None:
    """Per device, workload and batch size: samples/s in each mode, speedup over eager, best marked ★."""
    if not _varies_modes(run):
        return None
    modes = _ordered((c.mode for c in run.cases), list(run.options.modes))
    threads_varied = any(c.threads is not None for c in run.cases)
    rows: dict[tuple[Any, ...], dict[str, CaseResult]] = {}
    for case in sorted(run.cases, key=_case_order(run)):
        row_key = (case.device, case.threads, case.workload, case.loader, case.batch_size)
        rows.setdefault(row_key, {})[case.mode] = case
    lines = []
    for (device, threads, name, loader, batch), by_mode in rows.items():
        eager = by_mode.get("eager")
        valid = {m: c.samples_per_s for m, c in by_mode.items() if c.samples_per_s}
        best = max(valid, key=lambda m: valid[m]) if len(valid) > 1 else None
        cells = []
        for mode in modes:
            cell_case = by_mode.get(mode)
            if cell_case is None or not cell_case.ok:
                cells.append(rate_cell(cell_case))
                continue
            cell = fmt_rate(cell_case.samples_per_s)
            if eager is not None and eager.samples_per_s and mode != "eager" and cell_case.samples_per_s:
                cell += f" ({cell_case.samples_per_s / eager.samples_per_s:.2f}x)"
            cells.append(cell + (BEST_MARK if mode == best else ""))
        start = [device, *([threads or "default"] if threads_varied else []), name, loader or "–", batch]
        lines.append([*start, *cells])
    headers = ["device", *(["threads"] if threads_varied else []), "workload", "loader", "batch", *modes]
    return tabulate(lines, headers=headers, tablefmt=fmt, disable_numparse=True)


def validation_table(run: Run, fmt: str = "github") -> str | None:
    """Every case not in eager mode, or checked against a reference (data-parallel training against one
    process at the global batch): its checks, compile time, recompiles, and its figures."""
    cases = [c for c in run.cases if c.mode != "eager" or c.validations]
    if not cases:
        return None
    varied = [d for d in _varied(run) if d[0] != "mode"]
    rows = []
    for case in sorted(cases, key=_case_order(run)):
        checks = "; ".join(("ok: " if v.passed else "FAILED: ") + v.describe() for v in case.validations)
        rows.append(
            [
                case.mode, case.workload, case.loader or "–", case.device, *_dimension_cells(case, varied),
                case.batch_size,
                case.status if case.status in ("ok", "invalid") else f"{status_cell(case)}: {_short(case.error)}",
                fmt_rate(case.measured_rate), fmt_seconds(case.compile_s), case.recompiles if case.ok or
                case.status == "invalid" else "", checks or "–",
            ]
        )  # fmt: skip
    headers = ["mode", "workload", "loader", "device", *[d[1] for d in varied], "batch", "status",
               "measured samples/s", "compile",
               "recompiles while timed", "checks"]  # fmt: skip
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def efficiency_table(run: Run, fmt: str = "github") -> str | None:
    """Achieved FLOP/s against the device's measured peak, the verdict, and energy, per case."""
    cases = [c for c in run.cases if c.ok and c.flops_per_sample]
    if not cases:
        return None
    varied = _varied(run)
    rows = []
    for case in sorted(cases, key=_case_order(run)):
        achieved, share = flops_per_s(case), overhead_share(run, case)
        rows.append(
            [
                case.workload, case.loader or "–", case.device, *_dimension_cells(case, varied), case.batch_size,
                fmt_rate(case.samples_per_s), fmt_flops(achieved), fmt_percent(peak_fraction(run, case)),
                case.ops_per_step if case.ops_per_step is not None else "–", fmt_percent(share),
                verdict(run, case), energy_cell(run, case),
            ]
        )  # fmt: skip
    headers = ["workload", "loader", "device", *[d[1] for d in varied], "batch", "samples/s", "FLOP/s",
               "% of peak", "ops/step", "ops × floor", "bound by", "energy per 1,000 samples"]  # fmt: skip
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def fmt_flops(value: float | None) -> str:
    """`110 GFLOP/s`, `61.2 TFLOP/s`."""
    text = fmt_rate(value)
    if text == "–":
        return text
    number, unit = (text[:-1], text[-1]) if text[-1] in "kMGT" else (text, "")
    return f"{number} {unit}FLOP/s"


def peaks_lines(env: Any) -> list[str]:
    """`cpu: float32 110 GFLOP/s (1024² matmul), bfloat16 ...; per-op floor 1.0 µs`, per device."""
    peaks = fact(env, "peaks")
    if not isinstance(peaks, dict):
        return []
    lines = []
    for where, figures in peaks.items():
        parts = [
            f"{name} {fmt_flops(fact_number(figures, name))} ({fact_text(figures, f'{name}_matmul_side')}² matmul)"
            for name in ("float32", "bfloat16", "tfloat32")
            if fact_number(figures, name) is not None
        ]
        floor = fmt_seconds(fact_number(figures, "op_floor_s"))
        lines.append(f"{where}: {', '.join(parts)}; per-op floor {floor}")
    return lines


def energy_lines(env: Any) -> list[str]:
    meters = fact(env, "energy")
    if not isinstance(meters, dict):
        return []
    return [
        f"{device}: {fact_text(m, 'source')}"
        if fact(m, "available") is True
        else f"{device}: not available: {fact_text(m, 'reason')}"
        for device, m in meters.items()
    ]


def memory_table(run: Run, fmt: str = "github") -> str:
    varied = _varied(run)
    rows = []
    for case in sorted(run.cases, key=_case_order(run)):
        start, peak = case.peak("host_rss_start_bytes"), case.peak("host_rss_peak_bytes")
        growth = max(
            (r.memory.host_rss_peak_bytes - r.memory.host_rss_start_bytes for r in case.passes if r.memory),
            default=None,
        )
        rows.append(
            [
                case.workload,
                case.loader or "–",
                case.device,
                *_dimension_cells(case, varied),
                case.batch_size,
                fmt_mib(peak if start is not None else None),
                fmt_mib(growth),
                fmt_mib(case.own_device_peak_bytes),
                fmt_mib(case.peak("device_peak_allocated_bytes")),
                fmt_mib(case.peak("device_peak_reserved_bytes")),
                fmt_mib(case.peak("nvml_used_bytes")),
            ]
        )
    headers = [
        "workload", "loader", "device", *[d[1] for d in varied], "batch", "host peak RSS MiB",
        "host growth MiB", "device peak, own MiB", "device peak allocated MiB",
        "device peak reserved MiB", "NVML used MiB",
    ]  # fmt: skip
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def cases_table(run: Run, fmt: str = "github") -> str:
    varied = _varied(run)
    rows = []
    for case in sorted(run.cases, key=_case_order(run)):
        status = case.status if case.ok else f"{status_cell(case)}: {_short(case.error)}"
        if case.failed_passes:
            status += f" ({len(case.failed_passes)} later pass(es) failed)"
        rows.append(
            [
                case.workload,
                case.loader or "–",
                case.device,
                *_dimension_cells(case, varied),
                case.batch_size,
                status,
                fmt_seconds(case.median_s),
                fmt_percent(case.spread),
                "noisy" if case.noisy else "",
                case.n or "",
                len(case.passes) or "",
                fmt_rate(case.samples_per_s) if case.ok else "",
            ]
        )
    headers = ["workload", "loader", "device", *[d[1] for d in varied], "batch", "status", "median",
               "spread (IQR/median)", "noisy", "n", "passes", "samples/s"]  # fmt: skip
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def _short(text: str | None, width: int = 80) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- whole documents -----------------------------------------------------------------------------


def header_lines(run: Run, markup: bool = True) -> list[str]:
    """What every rendering starts with: state, dataset (synthetic said loudly), environment, command.

    `markup=False` gives the same lines for a terminal: no Markdown emphasis or code marks.
    """

    def strong(text: str) -> str:
        return f"**{text}**" if markup else text

    def code(text: str) -> str:
        return f"`{text}`" if markup else text

    dataset = run.dataset
    lines = []
    if run.partial:
        lines.append(
            f"{strong('PARTIAL RUN')} ({run.state}): {len(run.cases)} of {run.planned_cases} planned cases "
            "finished; the missing cells were never measured."
        )
    else:
        lines.append(f"Complete run: {len(run.cases)} cases.")
    name = "SYNTHETIC" if dataset.synthetic else dataset_display_name(dataset.name)
    data_line = (
        f"Dataset: {strong(name)} ({dataset.train_samples:,} training / {dataset.test_samples:,} test images) "
        f"from {code(dataset.source)}"
    )
    if dataset.synthetic:
        data_line += " — " + strong("synthetic data: throughput is real, accuracy is not meaningful")
    lines.append(data_line + ".")
    if dataset.note and not dataset.synthetic:
        lines.append(f"Note: {dataset.note}.")
    elif dataset.note and dataset.requested == "auto":
        lines.append(f"Why synthetic: {dataset.note}.")
    lines.append(f"Environment: {environment_line(run.env)}.")
    loadavg = fact(run.env, "load", "loadavg")
    if isinstance(loadavg, list):
        busy = fact(run.env, "load", "busy_processes")
        names = (
            ", ".join(f"{fact_text(p, 'name')} ({fact_text(p, 'cpu_percent')}%)" for p in busy)
            if isinstance(busy, list)
            else ""
        )
        lines.append(
            f"Load at start: {' '.join(map(str, loadavg))} (1/5/15 min); other busy processes: {names or 'none'}."
        )
    steal = fact_number(run.env, "during_run", "steal_percent")
    if steal is not None:
        end = fact(run.env, "during_run", "loadavg_end")
        lines.append(
            f"During the run: the hypervisor took {steal:.1f}% of CPU time (steal); load average at the end "
            f"{' '.join(map(str, end)) if isinstance(end, list) else '?'}."
        )
    lines.append(f"Timing: {timing_text(run.env)}.")
    spread = fact(run.env, "processes")
    if isinstance(spread, dict):
        lines.append(
            f"Processes: {fact_text(spread, 'world_size')} started by torchrun on {fact_text(spread, 'nnodes')} "
            f"machine(s), {fact_text(spread, 'backend')}; on the CPU each runs "
            f"{fact_text(spread, 'threads_per_process')} thread(s), an equal share of the usable CPUs."
        )
    peaks = peaks_lines(run.env)
    if peaks:
        lines.append(f"Measured peaks: {'; '.join(peaks)}.")
    command = fact(run.env, "command_line")
    if isinstance(command, str):
        lines.append(f"Command: {code(command)}; run {run.run_id}, started {run.created}.")
    return lines


def timing_text(env: Any) -> str:
    """How this run timed its work, as it recorded it (older files did not record it: said so)."""
    policy = fact(env, "timing", "gc")
    overheads = fact(env, "timing", "clock_overhead_s")
    rounds = fact(env, "timing", "min_round_s")
    if not isinstance(policy, str) or not isinstance(overheads, dict) or not isinstance(rounds, dict):
        return "not recorded (a results file from before torch-bench recorded its timing policy)"
    reads = [
        f"{device} {fmt_seconds(fact_number(overheads, device))} per read, rounds of at least "
        f"{fmt_seconds(fact_number(rounds, device))}"
        for device in overheads
    ]
    return f"{policy}; device clock: {'; '.join(reads)} (the clock stays under 1% of a round)"


def summary_markdown(run: Run) -> str:
    parts = [f"# Benchmark run {run.run_id}", "", *[f"{line}  " for line in header_lines(run)], ""]
    parts += [
        "## Throughput (samples/s, higher is better)",
        "",
        f"Cells marked `~` are noisy (spread IQR/median above {NOISY_SPREAD:.0%}; quartiles are "
        f"{QUARTILE_METHOD}); OOM, error, skipped and invalid cells were attempted and are explained in "
        "All cases.",
        "",
        throughput_table(run),
        "",
    ]
    speed = speedup_table(run)
    if speed:
        parts += ["## Speedup over the CPU (same workload and batch size)", "", speed, ""]
    epochs = epoch_table(run)
    if epochs:
        parts += [
            "## Epochs (one full pass over the training set)",
            "",
            "`data share`: time the loop spent waiting for the loader's next batch (`host clock`: wall time on "
            "the host; `cuda events`: GPU time of the resident loader's gather). `vs train_steps`: epoch time "
            "over the time of as many `train_step`s (their mean, the ragged last batch counted by its size) "
            "measured just before it (same pass) and just after it (next pass), the median over the epochs "
            "(1.00x = the data path costs nothing).",
            "",
            epochs,
            "",
        ]
    train = train_table(run)
    if train:
        parts += [
            "## Training to accuracy (the chapter's run)",
            "",
            "Each training run starts from its own seed (weights and shuffling); a run that never reaches "
            "the target has no time to target and is counted, not hidden.",
            "",
            train,
            "",
        ]
    scaling = scaling_table(run)
    if scaling:
        parts += [
            "## Across processes (torchrun; one model with DistributedDataParallel, or copies side by side)",
            "",
            "`all processes samples/s`: the samples of every process over the slowest one's time, each round "
            "started after a barrier. `scaling efficiency`: that over N times the one-process case measured in "
            "this run. `all-reduce share`: the gradient all-reduce timed alone, as a share of a step. "
            "Side by side: independent copies, each its own model and data, at the same moment.",
            "",
            scaling,
            "",
        ]
    modes = modes_table(run)
    if modes:
        parts += [
            "## Modes (samples/s; speedup over eager; ★ the fastest valid mode)",
            "",
            "A mode a device cannot run is `skipped`; one that computes something else than eager (see the "
            "checks below) is `invalid` and never a number here.",
            "",
            modes,
            "",
        ]
    checks = validation_table(run)
    if checks:
        parts += [
            "## Checks against a reference (modes against eager, data-parallel against one process)",
            "",
            "`loss`: from the same seed and batches, the mean loss after the validation steps, relative to "
            "eager's; `accuracy`: the training runs' final test accuracy, in points, against eager at the same "
            "batch, or for N data-parallel processes at batch B each, one process at batch N·B. `compile`: the first "
            "call of each shape (compiling or capturing), timed apart and never inside the timed rounds.",
            "",
            checks,
            "",
        ]
    efficiency = efficiency_table(run)
    if efficiency:
        peaks = peaks_lines(run.env)
        energy = energy_lines(run.env)
        parts += [
            "## Efficiency (against this device's own measured peak)",
            "",
            f"FLOPs: {COUNTING_RULE}. Peaks measured in this run: "
            + ("; ".join(peaks) or "not recorded")
            + ". "
            "`ops × floor`: the ATen ops one step dispatches times the per-op floor, as a share of the step; "
            f"above {OVERHEAD_SHARE:.0%} the step is `overhead-bound`, else `compute-bound` (an epoch that waits "
            f"for its data {OVERHEAD_SHARE:.0%} of the time or more is `data-bound`). Energy: "
            + ("; ".join(energy) or "not recorded")
            + " (mean power over the timed work, when it lasted at least 1 s).",
            "",
            efficiency,
            "",
        ]
    parts += [
        "## Memory (peak per case, largest over its passes)",
        "",
        "`device peak, own`: the case's peak of live tensors above what was allocated when it started "
        "(cuBLAS workspaces and the like); `device peak allocated`: the same peak, absolute.",
        "",
        memory_table(run),
        "",
    ]
    parts += ["## All cases", "", cases_table(run), ""]
    if run.plots:
        parts += ["## Plots", "", *[f"![{Path(p).stem}]({p})" for p in sorted(run.plots)], ""]
    return "\n".join(parts)


def console_summary(run: Run) -> str:
    parts = [
        *header_lines(run, markup=False),
        "",
        "Throughput (samples/s):",
        throughput_table(run, fmt="simple"),
    ]
    for title, table in (
        ("Speedup over the CPU:", speedup_table(run, fmt="simple")),
        ("Across processes:", scaling_table(run, fmt="simple")),
        (
            "Modes (speedup over eager, * fastest valid):",
            (modes_table(run, fmt="simple") or "").replace("★", "*"),
        ),
        ("Epochs:", epoch_table(run, fmt="simple")),
        ("Training:", train_table(run, fmt="simple")),
    ):
        if table:
            parts += ["", title, table]
    return "\n".join(parts)


CSV_COLUMNS = (
    "workload", "loader", "device", "mode", "threads", "world_size", "batch_size", "status", "error",
    "samples_per_s", "median_s", "iqr_s", "spread", "noisy", "n", "passes", "host_rss_start_bytes",
    "host_rss_peak_bytes", "device_baseline_allocated_bytes", "device_own_peak_bytes",
    "device_peak_allocated_bytes", "device_peak_reserved_bytes", "nvml_used_bytes", "data_share",
    "epoch_vs_train_steps", "speedup_vs_cpu", "final_test_accuracy", "runs", "runs_reaching_target",
    "median_seconds_to_target", "flops_per_sample", "flops_per_s", "peak_fraction", "ops_per_step",
    "overhead_share", "bound_by", "compile_s", "recompiles", "watts", "joules_per_1000_samples",
    "validation", "side_by_side", "backend", "nnodes", "scaling_efficiency", "comm_share",
    "dataset", "synthetic", "torch", "run_id",
)  # fmt: skip


def csv_text(run: Run) -> str:
    """One row per case in raw units (seconds, bytes, samples/s) for spreadsheets and scripts."""
    cases = index_cases(run)
    target = run.options.target_accuracy
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for case in sorted(run.cases, key=_case_order(run)):
        timing = workload(case.workload).timing
        trained = timing == RUNS and case.ok and not run.dataset.synthetic
        energy = energy_figures(case) if case.ok else None
        writer.writerow(
            {
                "workload": case.workload,
                "loader": case.loader or "",
                "device": case.device,
                "mode": case.mode,
                "threads": case.threads or "",
                "world_size": case.world_size,
                "batch_size": case.batch_size,
                "status": case.status,
                "error": case.error or "",
                "samples_per_s": case.samples_per_s,
                "median_s": case.median_s,
                "iqr_s": case.iqr_s,
                "spread": case.spread,
                "noisy": case.noisy,
                "n": case.n,
                "passes": len(case.passes),
                "host_rss_start_bytes": case.peak("host_rss_start_bytes"),
                "host_rss_peak_bytes": case.peak("host_rss_peak_bytes"),
                "device_baseline_allocated_bytes": case.peak("device_baseline_allocated_bytes"),
                "device_own_peak_bytes": case.own_device_peak_bytes,
                "device_peak_allocated_bytes": case.peak("device_peak_allocated_bytes"),
                "device_peak_reserved_bytes": case.peak("device_peak_reserved_bytes"),
                "nvml_used_bytes": case.peak("nvml_used_bytes"),
                "data_share": data_share(case) if timing == EPOCHS else None,
                "epoch_vs_train_steps": epoch_vs_steps(case, cases) if timing == EPOCHS else None,
                "speedup_vs_cpu": speedup(case, cases) if case.device != "cpu" else None,
                "final_test_accuracy": case.final_accuracy if trained else None,
                "runs": len(case.runs) if timing == RUNS else None,
                "runs_reaching_target": time_to_target(case, target)[0] if trained else None,
                "median_seconds_to_target": median_time_to_target(case, target) if trained else None,
                "flops_per_sample": case.flops_per_sample,
                "flops_per_s": flops_per_s(case) if case.ok else None,
                "peak_fraction": peak_fraction(run, case) if case.ok else None,
                "ops_per_step": case.ops_per_step,
                "overhead_share": overhead_share(run, case),
                "bound_by": verdict(run, case) if case.ok else "",
                "compile_s": case.compile_s,
                "recompiles": case.recompiles if case.passes else None,
                "watts": energy[0] if energy else None,
                "joules_per_1000_samples": energy[1] if energy else None,
                "validation": "; ".join(
                    ("passed " if v.passed else "FAILED ") + v.check for v in case.validations
                ),
                "dataset": run.dataset.name,
                "synthetic": run.dataset.synthetic,
                "torch": fact(run.env, "torch", "version"),
                "run_id": run.run_id,
            }
        )
    return buffer.getvalue()


def write_tables(run: Run, folder: Path) -> list[Path]:
    """Writes summary.md and results.csv next to results.json (atomically, like the results)."""
    summary, table = folder / SUMMARY_FILE, folder / CSV_FILE
    write_atomic(summary, summary_markdown(run))
    write_atomic(table, csv_text(run))
    return [summary, table]


def check_table(report: CheckReport, fmt: str = "simple") -> str:
    """The install check as a table: one line per check, a hint beside every FAIL and WARN."""
    rows = [[line.name, line.verdict, line.detail, line.hint] for line in report.lines]
    failed = sum(line.verdict == "FAIL" for line in report.lines)
    warned = sum(line.verdict == "WARN" for line in report.lines)
    verdict = "PASS: this install works" if report.passed else f"FAIL: {failed} check(s) failed"
    if warned:
        verdict += f" ({warned} warning(s))"
    table = tabulate(
        rows, headers=["check", "result", "details", "what to do"], tablefmt=fmt, disable_numparse=True
    )
    return f"{table}\n\n{verdict}"
