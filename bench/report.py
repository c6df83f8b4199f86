"""Results -> tables for people (Markdown, console) and rows for machines (CSV). Never measures.

Everything shown is derived here from the raw samples and bytes in results.json, so `bench report`
re-renders a run (finished or partial) exactly as `bench run` rendered it.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from bench import env as envmod
from bench.catalog import WORKLOADS
from bench.check import CheckReport
from bench.results import CaseResult, Run, write_atomic
from bench.stats import NOISY_SPREAD

SUMMARY_FILE = "summary.md"
CSV_FILE = "results.csv"
NOISY_MARK = " ~"
STATUS_CELL = {"oom": "OOM", "error": "error"}
MIB = 2**20


# --- units for people ---------------------------------------------------------------------------


def fmt_rate(value: float | None) -> str:
    """Samples per second with three significant digits and k/M: `1.23M`, `45.6k`, `789`."""
    if value is None or not math.isfinite(value):
        return "–"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def fmt_seconds(value: float | None) -> str:
    """Milliseconds below a second (`0.152 ms`, `15.2 ms`), seconds above (`15.4 s`)."""
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.3g} s"


def fmt_mib(value: int | None) -> str:
    return "–" if value is None else f"{value / MIB:,.1f}"


def fmt_percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def rate_cell(case: CaseResult | None) -> str:
    """A throughput cell: the number, `~` when noisy, or OOM/error: never a number for a failure."""
    if case is None:
        return ""
    if not case.ok:
        return STATUS_CELL.get(case.status, case.status)
    mark = NOISY_MARK if case.noisy else ""
    return fmt_rate(case.samples_per_s) + mark


# --- derived values -----------------------------------------------------------------------------


def index_cases(run: Run) -> dict[tuple[str, str, int, str | None], CaseResult]:
    return {(c.workload, c.device, c.batch_size, c.loader): c for c in run.cases}


def data_share(case: CaseResult) -> float | None:
    """Share of epoch time spent waiting for batches (epoch cases), summed over all timed epochs."""
    data = case.details.get("data_seconds")
    if not case.ok or not data or not case.samples_s:
        return None
    return sum(data) / sum(case.samples_s)


def epoch_vs_steps(
    case: CaseResult, cases: dict[tuple[str, str, int, str | None], CaseResult]
) -> float | None:
    """Epoch time over the time of as many `train_step`s (one per batch) measured in this run.

    The steps enter with their mean, not their median: an epoch's time is a sum that includes every
    stall of the machine, and so is a mean; a median of short rounds leaves stalls out (on a shared
    2-core VM that alone moved this ratio by 10-20%). Where both cases record their passes, each
    epoch is set against the steps of its own pass and the median of those per-epoch ratios is
    returned, so a slow stretch of the machine that hits one pass does not decide the ratio; results
    without pass records (older files) get the epochs' median over the mean of all the steps.
    """
    step = cases.get(("train_step", case.device, case.batch_size, None))
    steps = case.details.get("batches_per_epoch")
    if not case.ok or step is None or not step.ok or not steps or not step.samples_s or not case.median_s:
        return None
    paired = paired_epoch_ratios(case, step, steps)
    if paired:
        return statistics.median(paired)
    return case.median_s / (steps * statistics.fmean(step.samples_s))


def _int_list(value: Any) -> list[int] | None:
    if isinstance(value, list) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        return value
    return None


def paired_epoch_ratios(epoch: CaseResult, step: CaseResult, steps: int) -> list[float]:
    """Per epoch: its seconds over `steps` times the train_step mean of the same pass.

    Empty when the two cases do not both carry consistent pass records (`pass_index`, and for the
    steps `pass_rounds`, which splits `samples_s` back into its passes).
    """
    step_passes = _int_list(step.details.get("pass_index"))
    rounds = _int_list(step.details.get("pass_rounds"))
    epoch_passes = _int_list(epoch.details.get("pass_index"))
    if step_passes is None or rounds is None or epoch_passes is None:
        return []
    if len(step_passes) != len(rounds) or sum(rounds) != len(step.samples_s):
        return []
    if len(epoch_passes) != len(epoch.samples_s):
        return []
    step_means: dict[int, float] = {}
    start = 0
    for index, count in zip(step_passes, rounds, strict=True):
        if count > 0:
            step_means[index] = statistics.fmean(step.samples_s[start : start + count])
        start += count
    return [
        seconds / (steps * step_means[index])
        for index, seconds in zip(epoch_passes, epoch.samples_s, strict=True)
        if step_means.get(index)
    ]


def time_to_target(case: CaseResult) -> tuple[int | None, float | None]:
    """(epochs, training seconds) until test accuracy first reaches the target; (None, None) if never."""
    target = case.details.get("target_accuracy")
    if not case.ok or target is None or not case.test_accuracy:
        return None, None
    elapsed = 0.0
    for epoch, (seconds, accuracy) in enumerate(
        zip(case.samples_s, case.test_accuracy, strict=False), start=1
    ):
        elapsed += seconds
        if accuracy >= target:
            return epoch, elapsed
    return None, None


def speedup(case: CaseResult, cases: dict[tuple[str, str, int, str | None], CaseResult]) -> float | None:
    cpu = cases.get((case.workload, "cpu", case.batch_size, case.loader))
    if not case.ok or cpu is None or not cpu.ok or not cpu.samples_per_s or not case.samples_per_s:
        return None
    return case.samples_per_s / cpu.samples_per_s


# --- tables -------------------------------------------------------------------------------------


def _ordered(values: Iterable[Any], order: Sequence[Any] = ()) -> list[Any]:
    unique = list(dict.fromkeys(values))
    return sorted(
        unique, key=lambda value: (order.index(value) if value in order else len(order), str(value))
    )


def _devices(run: Run) -> list[str]:
    return _ordered((c.device for c in run.cases), ["cpu"])


def _batch_sizes(run: Run) -> list[int]:
    return sorted({c.batch_size for c in run.cases})


def _row_keys(run: Run) -> list[tuple[str, str | None, str]]:
    keys = {(c.workload, c.loader, c.device) for c in run.cases}
    devices = _devices(run)
    return sorted(
        keys,
        key=lambda k: (WORKLOADS.index(k[0]) if k[0] in WORKLOADS else 99, k[1] or "", devices.index(k[2])),
    )


def throughput_table(run: Run, fmt: str = "github") -> str:
    sizes = _batch_sizes(run)
    cases = index_cases(run)
    rows = []
    for workload, loader, device in _row_keys(run):
        cells = [rate_cell(cases.get((workload, device, size, loader))) for size in sizes]
        rows.append([workload, loader or "", device, *cells])
    headers = ["workload", "loader", "device", *[f"batch {size}" for size in sizes]]
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def speedup_table(run: Run, fmt: str = "github") -> str | None:
    devices = [d for d in _devices(run) if d != "cpu"]
    if not devices or "cpu" not in _devices(run):
        return None
    sizes = _batch_sizes(run)
    cases = index_cases(run)
    rows = []
    for workload, loader, device in _row_keys(run):
        if device == "cpu":
            continue
        cells = []
        for size in sizes:
            case = cases.get((workload, device, size, loader))
            cells.append(
                "" if case is None else (fmt_ratio(speedup(case, cases)) if case.ok else rate_cell(case))
            )
        rows.append([workload, loader or "", device, *cells])
    headers = ["workload", "loader", "device", *[f"batch {size}" for size in sizes]]
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def epoch_table(run: Run, fmt: str = "github") -> str | None:
    cases = index_cases(run)
    epochs = [c for c in run.cases if c.workload == "epoch"]
    if not epochs:
        return None
    rows = []
    for case in sorted(epochs, key=lambda c: (c.loader or "", _devices(run).index(c.device), c.batch_size)):
        if not case.ok:
            rows.append([case.loader, case.device, case.batch_size, rate_cell(case), "", "", "", "", case.n])
            continue
        rows.append(
            [
                case.loader,
                case.device,
                case.batch_size,
                fmt_seconds(case.median_s),
                rate_cell(case),
                fmt_percent(data_share(case)),
                fmt_ratio(epoch_vs_steps(case, cases)),
                fmt_percent(case.spread),
                case.n,
            ]
        )
    headers = [
        "loader",
        "device",
        "batch",
        "s/epoch",
        "samples/s",
        "data share",
        "vs train_steps",
        "spread",
        "n",
    ]
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def train_table(run: Run, fmt: str = "github") -> str | None:
    trains = [c for c in run.cases if c.workload == "train"]
    if not trains:
        return None
    rows = []
    for case in sorted(trains, key=lambda c: (_devices(run).index(c.device), c.batch_size)):
        if not case.ok:
            rows.append([case.device, case.batch_size, case.loader, rate_cell(case), "", "", "", "", ""])
            continue
        epochs, seconds = time_to_target(case)
        target = case.details.get("target_accuracy")
        reached = f"epoch {epochs}, {fmt_seconds(seconds)}" if epochs else "not reached"
        accuracies = " ".join(f"{value * 100:.1f}" for value in case.test_accuracy or [])
        rows.append(
            [
                case.device,
                case.batch_size,
                case.loader,
                len(case.samples_s),
                fmt_percent(case.final_accuracy),
                f"{fmt_percent(target)}: {reached}",
                fmt_seconds(sum(case.samples_s)),
                rate_cell(case),
                accuracies,
            ]
        )
    headers = [
        "device",
        "batch",
        "loader",
        "epochs",
        "final acc",
        "target: reached at",
        "train time",
        "samples/s",
        "test acc % per epoch",
    ]
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def memory_table(run: Run, fmt: str = "github") -> str:
    rows = []
    for case in sorted(run.cases, key=_case_order(run)):
        delta = None
        if case.host_rss_peak_bytes is not None and case.host_rss_start_bytes is not None:
            delta = case.host_rss_peak_bytes - case.host_rss_start_bytes
        rows.append(
            [
                case.workload,
                case.loader or "",
                case.device,
                case.batch_size,
                fmt_mib(case.host_rss_peak_bytes),
                fmt_mib(delta),
                fmt_mib(case.device_peak_allocated_bytes),
                fmt_mib(case.device_peak_reserved_bytes),
                fmt_mib(case.nvml_used_peak_bytes),
            ]
        )
    headers = [
        "workload",
        "loader",
        "device",
        "batch",
        "host peak RSS MiB",
        "host growth MiB",
        "device peak allocated MiB",
        "device peak reserved MiB",
        "NVML used MiB",
    ]
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def cases_table(run: Run, fmt: str = "github") -> str:
    rows = []
    for case in sorted(run.cases, key=_case_order(run)):
        noisy = "noisy" if case.noisy else ""
        rows.append(
            [
                case.workload,
                case.loader or "",
                case.device,
                case.batch_size,
                case.status
                if case.ok
                else f"{STATUS_CELL.get(case.status, case.status)}: {_short(case.error)}",
                fmt_seconds(case.median_s),
                fmt_percent(case.spread),
                noisy,
                case.n or "",
                fmt_rate(case.samples_per_s) if case.ok else "",
            ]
        )
    headers = [
        "workload",
        "loader",
        "device",
        "batch",
        "status",
        "median",
        "spread (IQR/median)",
        "",
        "n",
        "samples/s",
    ]
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def _short(text: str | None, width: int = 80) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _case_order(run: Run) -> Any:
    devices = _devices(run)
    return lambda c: (
        WORKLOADS.index(c.workload) if c.workload in WORKLOADS else 99,
        c.loader or "",
        devices.index(c.device),
        c.batch_size,
    )


# --- whole documents ----------------------------------------------------------------------------


def header_lines(run: Run) -> list[str]:
    """What every rendering starts with: state, dataset (synthetic said loudly), environment, command."""
    dataset = run.dataset
    lines = []
    finished = len(run.cases)
    if run.partial:
        lines.append(
            f"**PARTIAL RUN** ({run.state}): {finished} of {run.planned_cases} planned cases finished; "
            "the missing cells were never measured."
        )
    else:
        lines.append(f"Complete run: {finished} cases.")
    name = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "synthetic": "SYNTHETIC"}.get(
        dataset.get("name", ""), dataset.get("name", "?")
    )
    data_line = (
        f"Dataset: **{name}** ({dataset.get('train_samples', 0):,} training / {dataset.get('test_samples', 0):,} "
        f"test images) from `{dataset.get('source', '?')}`"
    )
    if dataset.get("synthetic"):
        data_line += " — **synthetic data: throughput is real, accuracy is not meaningful**"
    lines.append(data_line + ".")
    if dataset.get("note") and not dataset.get("synthetic"):
        lines.append(f"Note: {dataset['note']}.")
    elif dataset.get("note") and dataset.get("requested") == "auto":
        lines.append(f"Why synthetic: {dataset['note']}.")
    lines.append(f"Environment: {envmod.summary_line(run.env)}.")
    load = run.env.get("load", {})
    if load.get("loadavg") is not None:
        busy = (
            ", ".join(f"{p['name']} ({p['cpu_percent']}%)" for p in load.get("busy_processes", [])) or "none"
        )
        lines.append(
            f"Load at start: {' '.join(str(x) for x in load['loadavg'])} (1/5/15 min); other busy processes: {busy}."
        )
    during = run.env.get("during_run", {})
    if during.get("steal_percent") is not None:
        lines.append(
            f"During the run: the hypervisor took {during['steal_percent']:.1f}% of CPU time (steal); "
            f"load average at the end {' '.join(str(x) for x in during.get('loadavg_end', []))}."
        )
    command = run.env.get("command_line")
    if command:
        lines.append(f"Command: `{command}`; run {run.run_id}, started {run.created}.")
    return lines


def summary_markdown(run: Run) -> str:
    parts = [f"# Benchmark run {run.run_id}", "", *[f"{line}  " for line in header_lines(run)], ""]
    parts += [
        "## Throughput (samples/s, higher is better)",
        "",
        f"Cells marked `~` are noisy (spread IQR/median above {NOISY_SPREAD:.0%}); OOM and error cells "
        "were attempted and failed (see All cases).",
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
            "`data share`: time the loop spent waiting for the loader's next batch. `vs train_steps`: epoch "
            "time over the time of one `train_step` per batch (their mean) measured in the same pass of "
            "this run, the median over the epochs (1.00x = the data path costs nothing).",
            "",
            epochs,
            "",
        ]
    train = train_table(run)
    if train:
        parts += ["## Training to accuracy (the chapter's run)", "", train, ""]
    parts += ["## Memory (peak per case)", "", memory_table(run), ""]
    parts += ["## All cases", "", cases_table(run), ""]
    plots = sorted(run.options.get("plots", []))
    if plots:
        parts += ["## Plots", "", *[f"![{Path(p).stem}]({p})" for p in plots], ""]
    return "\n".join(parts)


def console_summary(run: Run) -> str:
    parts = [*header_lines(run), "", "Throughput (samples/s):", throughput_table(run, fmt="simple")]
    speed = speedup_table(run, fmt="simple")
    if speed:
        parts += ["", "Speedup over the CPU:", speed]
    epochs = epoch_table(run, fmt="simple")
    if epochs:
        parts += ["", "Epochs:", epochs]
    train = train_table(run, fmt="simple")
    if train:
        parts += ["", "Training:", train]
    return "\n".join(parts)


CSV_COLUMNS = (
    "workload",
    "loader",
    "device",
    "batch_size",
    "status",
    "error",
    "samples_per_s",
    "median_s",
    "iqr_s",
    "spread",
    "noisy",
    "n",
    "host_rss_start_bytes",
    "host_rss_peak_bytes",
    "device_peak_allocated_bytes",
    "device_peak_reserved_bytes",
    "nvml_used_peak_bytes",
    "data_share",
    "epoch_vs_train_steps",
    "speedup_vs_cpu",
    "final_test_accuracy",
    "epochs_to_target",
    "seconds_to_target",
    "dataset",
    "synthetic",
    "torch",
    "run_id",
)


def csv_text(run: Run) -> str:
    """One row per case in raw units (seconds, bytes, samples/s) for spreadsheets and scripts."""
    cases = index_cases(run)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for case in sorted(run.cases, key=_case_order(run)):
        epochs, seconds = time_to_target(case) if case.workload == "train" else (None, None)
        writer.writerow(
            {
                "workload": case.workload,
                "loader": case.loader or "",
                "device": case.device,
                "batch_size": case.batch_size,
                "status": case.status,
                "error": case.error or "",
                "samples_per_s": case.samples_per_s,
                "median_s": case.median_s,
                "iqr_s": case.iqr_s,
                "spread": case.spread,
                "noisy": case.noisy,
                "n": case.n,
                "host_rss_start_bytes": case.host_rss_start_bytes,
                "host_rss_peak_bytes": case.host_rss_peak_bytes,
                "device_peak_allocated_bytes": case.device_peak_allocated_bytes,
                "device_peak_reserved_bytes": case.device_peak_reserved_bytes,
                "nvml_used_peak_bytes": case.nvml_used_peak_bytes,
                "data_share": data_share(case) if case.workload == "epoch" else None,
                "epoch_vs_train_steps": epoch_vs_steps(case, cases) if case.workload == "epoch" else None,
                "speedup_vs_cpu": speedup(case, cases) if case.device != "cpu" else None,
                "final_test_accuracy": case.final_accuracy,
                "epochs_to_target": epochs,
                "seconds_to_target": seconds,
                "dataset": run.dataset.get("name"),
                "synthetic": bool(run.dataset.get("synthetic")),
                "torch": run.env.get("torch", {}).get("version"),
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
