"""The tables of a run, each declared as data: which cases it shows and which figure each column reads.

Each function returns the table as text (`fmt`: tabulate's format, `github` for Markdown, `simple`
for a terminal) or None when the run has nothing for it. `FIGURES_SHOWN` lists, per table, the
figures (results.csv columns) its cells show, for the check that the CSV carries all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.analysis.metrics import one_process_case
from bench.core.catalog import Status, Timing, workload
from bench.core.keys import ordered, sort_key
from bench.core.results import CaseResult, Run
from bench.render.tables import (
    BATCH,
    DEVICE,
    LOADER,
    WORKLOAD,
    Cell,
    Column,
    case_table,
    devices_of,
    grid,
    rate_cell,
    render,
    status_cell,
)
from bench.render.units import (
    fmt_bandwidth,
    fmt_flops,
    fmt_mib,
    fmt_percent,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    shorten,
)

BEST_MARK = " ★"


def _timing(case: CaseResult) -> Timing:
    return workload(case.key.workload).timing


def throughput_table(run: Run, fmt: str = "github") -> str:
    return grid(run, lambda c: rate_cell(c.case), fmt=fmt)


def speedup_table(run: Run, fmt: str = "github") -> str | None:
    devices = devices_of(run)
    if "cpu" not in devices or all(d == "cpu" for d in devices):
        return None
    return grid(
        run,
        lambda c: fmt_ratio(c.figures.speedup_vs_cpu) if c.case.ok else rate_cell(c.case),
        include=lambda case: case.key.device != "cpu",
        fmt=fmt,
    )


def _ok_or_status(show: Any) -> Any:
    """A column's value for measured cases; a failed case's cell stays empty."""
    return lambda c: show(c) if c.case.ok else ""


EPOCH_COLUMNS = [
    BATCH,
    Column("s/epoch", lambda c: fmt_seconds(c.figures.median_s) if c.case.ok else rate_cell(c.case), "median_s"),
    Column("samples/s", _ok_or_status(lambda c: rate_cell(c.case)), "samples_per_s"),
    Column("data share", _ok_or_status(lambda c: fmt_percent(c.figures.data_share)), "data_share"),
    Column("data timed by", _ok_or_status(lambda c: ", ".join(c.figures.data_timer)), "data_timer"),
    Column("first batch", _ok_or_status(lambda c: fmt_seconds(c.figures.first_batch_s)), "first_batch_s"),
    Column("epoch boundary", _ok_or_status(lambda c: fmt_seconds(c.figures.epoch_boundary_s)), "epoch_boundary_s"),
    Column("vs train_steps", _ok_or_status(lambda c: fmt_ratio(c.figures.epoch_vs_train_steps)),
           "epoch_vs_train_steps"),
    Column("spread", _ok_or_status(lambda c: fmt_percent(c.figures.spread)), "spread"),
    Column("n", lambda c: c.figures.n, "n"),
]  # fmt: skip


def _is_epoch(case: CaseResult) -> bool:
    return _timing(case) is Timing.EPOCHS


def epoch_table(run: Run, fmt: str = "github") -> str | None:
    epochs = [c for c in run.cases if _is_epoch(c)]
    return case_table(run, epochs, [LOADER, DEVICE], EPOCH_COLUMNS, fmt) if epochs else None


def _train_cells(cell: Cell) -> list[Any]:
    case, figures, run = cell.case, cell.figures, cell.run
    if not case.ok:
        return [rate_cell(case), *[""] * 8]
    epochs = len(case.runs[0].samples_s) if case.runs else 0
    if run.dataset.synthetic:
        accuracy, reached, median, per_run, curve = "not meaningful", "–", "–", "–", "synthetic data"
    else:
        accuracy = fmt_percent(figures.final_test_accuracy)
        reached = f"{figures.runs_reaching_target} of {len(figures.seconds_to_target_per_run)}"
        median = fmt_seconds(figures.median_seconds_to_target)
        per_run = ", ".join(
            "not reached" if t is None else fmt_seconds(t) for t in figures.seconds_to_target_per_run
        )
        curve = " ".join(f"{value * 100:.1f}" for value in figures.test_accuracy_per_epoch)
    return [
        epochs, accuracy, reached, median, per_run, fmt_seconds(figures.train_seconds_median),
        rate_cell(case), curve,
    ]  # fmt: skip


TRAIN_FIGURES = (
    "final_test_accuracy", "runs_reaching_target", "median_seconds_to_target", "seconds_to_target_per_run",
    "train_seconds_median", "samples_per_s", "test_accuracy_per_epoch",
)  # fmt: skip


def _train_cell(index: int) -> Callable[[Cell], Any]:
    return lambda cell: _train_cells(cell)[index]


def train_table(run: Run, fmt: str = "github") -> str | None:
    trains = [c for c in run.cases if _timing(c) is Timing.RUNS]
    if not trains:
        return None
    target = run.options.target_accuracy
    headers = [
        "epochs", "final acc (median)", f"runs reaching {target:.0%}", "time to target (median)",
        "time to target per run", "train time (median)", "samples/s", "test acc % per epoch (median over runs)",
    ]  # fmt: skip
    after = [
        BATCH,
        LOADER,
        *(Column(header, _train_cell(i)) for i, header in enumerate(headers)),
    ]
    return case_table(run, trains, [DEVICE], after, fmt)


MODEL = Column("model", lambda c: c.case.key.model)


def models_of(run: Run) -> list[str]:
    """The models a run measured, in the order of its cases."""
    return list(dict.fromkeys(case.key.model for case in run.cases)) or ["mlp"]


SCALING_COLUMNS = [
    WORKLOAD,
    DEVICE,
    Column("batch per process", lambda c: c.case.key.batch_size),
    Column("how", lambda c: c.figures.parallel, "parallel"),
    Column("processes", lambda c: c.case.key.processes),
    Column("nodes", lambda c: c.case.nnodes or "–", "nnodes"),
    Column("threads each", lambda c: c.case.key.threads or "default"),
    Column("1 process samples/s", lambda c: rate_cell(one_process_case(c.run, c.case))),
    Column("all processes samples/s", lambda c: rate_cell(c.case), "samples_per_s"),
    Column("scaling efficiency", lambda c: fmt_percent(c.figures.scaling_efficiency), "scaling_efficiency"),
    Column("all-reduce share", lambda c: fmt_percent(c.figures.comm_share) if c.case.key.world_size > 1 else "",
           "comm_share"),
    Column("all-reduce bus bandwidth", lambda c: fmt_bandwidth(c.figures.all_reduce_bus_bytes_per_s)
           if c.case.key.world_size > 1 else "", "all_reduce_bus_bytes_per_s"),
    Column("of the link's", lambda c: fmt_percent(c.figures.all_reduce_link_share)
           if c.case.key.world_size > 1 else "", "all_reduce_link_share"),
    Column("per process samples/s",
           lambda c: " / ".join(fmt_rate(r) for r in c.figures.per_process_samples_per_s) or "–",
           "per_process_samples_per_s"),
]  # fmt: skip


def _is_spread(case: CaseResult) -> bool:
    return case.key.processes > 1


def scaling_table(run: Run, fmt: str = "github") -> str | None:
    """Cases across processes against their one-process case: total samples/s, efficiency, communication."""
    spread = [c for c in run.cases if _is_spread(c)]
    if not spread:
        return None
    columns = (
        SCALING_COLUMNS if models_of(run) == ["mlp"] else [SCALING_COLUMNS[0], MODEL, *SCALING_COLUMNS[1:]]
    )
    return case_table(run, spread, columns, [], fmt, dimensions=False)


def modes_table(run: Run, fmt: str = "github") -> str | None:
    """Per device, workload and batch size: samples/s in each mode, speedup over eager, best marked ★."""
    if len({case.key.mode for case in run.cases}) < 2:
        return None
    modes = ordered((c.key.mode for c in run.cases), list(run.options.modes))
    threads_varied = any(c.key.threads is not None for c in run.cases)
    models_varied = models_of(run) != ["mlp"]
    order = sort_key(devices_of(run), list(run.options.modes))
    rows: dict[tuple[Any, ...], dict[str, CaseResult]] = {}
    for case in sorted(run.cases, key=lambda c: order(c.key)):
        key = case.key
        where = (key.device, key.threads, key.model, key.workload, key.loader, key.batch_size)
        rows.setdefault(where, {})[key.mode] = case
    lines = []
    for (device, threads, model, name, loader, batch), by_mode in rows.items():
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
        start = [
            device,
            *([threads or "default"] if threads_varied else []),
            *([model] if models_varied else []),
        ]
        lines.append([*start, name, loader or "–", batch, *cells])
    headers = ["device", *(["threads"] if threads_varied else []), *(["model"] if models_varied else [])]
    headers += ["workload", "loader", "batch", *modes]
    return render(lines, headers, fmt)


def _status_with_error(case: CaseResult) -> str:
    if case.status in (Status.OK, Status.INVALID):
        return str(case.status)
    return f"{status_cell(case)}: {shorten(case.error)}"


VALIDATION_AFTER = [
    BATCH,
    Column("status", lambda c: _status_with_error(c.case)),
    Column("measured samples/s", lambda c: fmt_rate(c.figures.measured_samples_per_s), "measured_samples_per_s"),
    Column("compile", lambda c: fmt_seconds(c.figures.compile_s), "compile_s"),
    Column("recompiles while timed",
           lambda c: c.case.recompiles if c.case.status in (Status.OK, Status.INVALID) else "", "recompiles"),
    Column("checks", lambda c: "; ".join(("ok: " if v.passed else "FAILED: ") + v.describe()
                                         for v in c.case.validations) or "–", "validation"),
]  # fmt: skip


def _is_checked(case: CaseResult) -> bool:
    return case.key.mode != "eager" or bool(case.validations)


def validation_table(run: Run, fmt: str = "github") -> str | None:
    """Every case not in eager mode, or checked against a reference (data-parallel training against one
    process at the global batch): its checks, compile time, recompiles, and its figures."""
    cases = [c for c in run.cases if _is_checked(c)]
    if not cases:
        return None
    mode = Column("mode", lambda c: c.case.key.mode)
    return case_table(run, cases, [mode, WORKLOAD, LOADER, DEVICE], VALIDATION_AFTER, fmt, exclude=("mode",))


def energy_cell(cell: Cell) -> str:
    figures = cell.figures
    if figures.watts is not None and figures.joules_per_1000_samples is not None:
        return f"{figures.joules_per_1000_samples:.3g} J ({figures.watts:.0f} W)"
    meter = cell.run.meters.get(cell.case.key.device)
    return "timed work < 1 s" if meter is not None and meter.available else "n/a"


def _bound_by(cell: Cell) -> str:
    figures = cell.figures
    if figures.unexplained_share is not None:
        return f"{figures.bound_by} ({figures.unexplained_share:.0%} of the step)"
    return figures.bound_by or "–"


EFFICIENCY_AFTER = [
    BATCH,
    Column("samples/s", lambda c: fmt_rate(c.figures.samples_per_s), "samples_per_s"),
    Column("FLOP/s", lambda c: fmt_flops(c.figures.flops_per_s), "flops_per_s"),
    Column("% of peak", lambda c: fmt_percent(c.figures.peak_fraction), "peak_fraction"),
    Column("ops/step", lambda c: c.case.ops_per_step if c.case.ops_per_step is not None else "–", "ops_per_step"),
    Column("ops × floor", lambda c: fmt_percent(c.figures.overhead_share), "overhead_share"),
    Column("bound by", lambda c: _bound_by(c), "bound_by"),
    Column("energy per 1,000 samples", energy_cell, "joules_per_1000_samples"),
]  # fmt: skip


def _is_counted(case: CaseResult) -> bool:
    return case.ok and bool(case.flops_per_sample)


def efficiency_table(run: Run, fmt: str = "github") -> str | None:
    """Achieved FLOP/s against the device's measured peak, the verdict, and energy, per case."""
    cases = [c for c in run.cases if _is_counted(c)]
    return case_table(run, cases, [WORKLOAD, LOADER, DEVICE], EFFICIENCY_AFTER, fmt) if cases else None


MEMORY_AFTER = [
    BATCH,
    Column("host peak RSS MiB",
           lambda c: fmt_mib(c.figures.host_rss_peak_bytes if c.figures.host_rss_start_bytes is not None else None),
           "host_rss_peak_bytes"),
    Column("host growth MiB", lambda c: fmt_mib(c.figures.host_growth_bytes), "host_growth_bytes"),
    Column("device peak, own MiB", lambda c: fmt_mib(c.figures.device_own_peak_bytes), "device_own_peak_bytes"),
    Column("device peak allocated MiB", lambda c: fmt_mib(c.figures.device_peak_allocated_bytes),
           "device_peak_allocated_bytes"),
    Column("device peak reserved MiB", lambda c: fmt_mib(c.figures.device_peak_reserved_bytes),
           "device_peak_reserved_bytes"),
    Column("NVML used MiB", lambda c: fmt_mib(c.figures.nvml_used_bytes), "nvml_used_bytes"),
]  # fmt: skip


def memory_table(run: Run, fmt: str = "github") -> str:
    return case_table(run, run.cases, [WORKLOAD, LOADER, DEVICE], MEMORY_AFTER, fmt)


def _case_status(case: CaseResult) -> str:
    status = str(case.status) if case.ok else f"{status_cell(case)}: {shorten(case.error)}"
    if case.failed_passes:
        status += f" ({len(case.failed_passes)} later pass(es) failed)"
    return status


def _cpus(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


CASES_AFTER = [
    BATCH,
    Column("status", lambda c: _case_status(c.case)),
    Column("median", lambda c: fmt_seconds(c.figures.median_s), "median_s"),
    Column("spread (IQR/median)", lambda c: fmt_percent(c.figures.spread), "spread"),
    Column("noisy", lambda c: "noisy" if c.figures.noisy else "", "noisy"),
    Column("health", lambda c: ", ".join(c.figures.health), "health"),
    Column("CPU wait", lambda c: fmt_percent(c.figures.run_queue_wait), "run_queue_wait"),
    Column("others' CPUs", lambda c: _cpus(c.figures.others_cpus), "others_cpus"),
    Column("CPU MHz", lambda c: f"{c.figures.cpu_mhz:.0f}" if c.figures.cpu_mhz else "", "cpu_mhz"),
    Column("n", lambda c: c.figures.n or "", "n"),
    Column("passes", lambda c: c.figures.passes or "", "passes"),
    Column("samples/s", lambda c: fmt_rate(c.figures.samples_per_s) if c.case.ok else "", "samples_per_s"),
]


def cases_table(run: Run, fmt: str = "github") -> str:
    return case_table(run, run.cases, [WORKLOAD, LOADER, DEVICE], CASES_AFTER, fmt)


def _every(case: CaseResult) -> bool:
    return True


# The per-case tables as data: name, the cases each shows, its columns. With the grids' and the
# train table's figures, what the check that results.csv carries every figure shown reads.
CASE_TABLES: tuple[tuple[str, Callable[[CaseResult], bool], Sequence[Column]], ...] = (
    ("epochs", _is_epoch, EPOCH_COLUMNS),
    ("scaling", _is_spread, SCALING_COLUMNS),
    ("checks", _is_checked, VALIDATION_AFTER),
    ("efficiency", _is_counted, EFFICIENCY_AFTER),
    ("memory", _every, MEMORY_AFTER),
    ("cases", _every, CASES_AFTER),
)
# per table, the figures its cells show
FIGURES_SHOWN: dict[str, tuple[str, ...]] = {
    "throughput": ("samples_per_s",),
    "speedup": ("speedup_vs_cpu",),
    "train": TRAIN_FIGURES,
    **{name: tuple(c.figure for c in columns if c.figure) for name, _, columns in CASE_TABLES},
}
