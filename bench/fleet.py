"""`bench report A B C ...`: runs gathered from several machines or images, in one cross-machine table.

Each column is one device of one run, named by its host, its CPU or GPU model and its torch build;
two runs that would get the same name (the same machine with other settings, say) stay apart, each
column then also naming its run. Rows are the cases' identity without the device (workload, loader,
batch size, and mode, threads or processes where they vary). Runs measured on different data or
with settings that change the numbers are compared with a warning, never mixed silently.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from bench.catalog import WORKLOADS
from bench.report import fact, fact_text, fmt_mib, rate_cell
from bench.results import CaseResult, Run, write_atomic

FLEET_MD, FLEET_CSV, FLEET_PNG = "fleet.md", "fleet.csv", "fleet.png"
SETTINGS = ("max_time", "passes", "epochs", "epoch_repeats", "train_runs", "target_accuracy", "quick")
ROW_FIELDS = ("workload", "loader", "batch_size", "mode", "threads", "world_size", "side_by_side")


@dataclass(frozen=True)
class Column:
    """One device of one run: what a fleet table calls a machine."""

    run: Run
    device: str
    name: str


def device_model(run: Run, device: str) -> str:
    """The CPU model for `cpu`, the GPU's name for `cuda:N` (and for `cuda`, the first GPU's)."""
    if device == "cpu":
        return fact_text(run.env, "cpu", "model")
    index = int(device.split(":")[1]) if ":" in device else 0
    devices = fact(run.env, "cuda", "devices")
    if isinstance(devices, list) and index < len(devices):
        return fact_text(devices[index], "name")
    return device


def columns(runs: list[Run]) -> list[Column]:
    named: list[Column] = []
    for run in runs:
        for device in dict.fromkeys(case.device for case in run.cases):
            name = f"{fact_text(run.env, 'host')} · {device_model(run, device)} · torch {fact_text(run.env, 'torch', 'version')}"
            named.append(Column(run, device, name))
    counts: dict[str, int] = {}
    for column in named:
        counts[column.name] = counts.get(column.name, 0) + 1
    return [
        Column(c.run, c.device, f"{c.name} · run {c.run.run_id}") if counts[c.name] > 1 else c for c in named
    ]


def row_key(case: CaseResult) -> tuple[Any, ...]:
    return tuple(getattr(case, field) for field in ROW_FIELDS)


def differences(runs: list[Run]) -> list[str]:
    """What differs between the runs in ways that change their numbers, one line each."""
    lines = []
    datasets = {(run.dataset.name, run.dataset.train_samples) for run in runs}
    if len(datasets) > 1:
        shown = ", ".join(
            f"{run.run_id}: {run.dataset.name} ({run.dataset.train_samples:,} images)" for run in runs
        )
        lines.append(f"the runs measured different data ({shown}): epochs and training are not comparable")
    for setting in SETTINGS:
        values = {getattr(run.options, setting) for run in runs}
        if len(values) > 1:
            shown = ", ".join(f"{run.run_id}: {getattr(run.options, setting)}" for run in runs)
            lines.append(f"option {setting} differs ({shown})")
    for run in runs:
        if run.partial:
            lines.append(f"run {run.run_id} is partial ({len(run.cases)} of {run.planned_cases} cases)")
    return lines


def _rows(runs: list[Run], named: list[Column], cell: Callable[[CaseResult | None], str]) -> list[list[str]]:
    order = {name: index for index, name in enumerate(WORKLOADS)}
    keys = sorted(
        {row_key(case) for run in runs for case in run.cases},
        key=lambda k: (order.get(k[0], 99), k[1] or "", k[2], k[3], k[4] or 0, k[5], k[6]),
    )
    index = {
        (id(c.run), c.device, row_key(case)): case
        for c in named
        for case in c.run.cases
        if case.device == c.device
    }
    rows = []
    for key in keys:
        cells = [cell(index.get((id(column.run), column.device, key))) for column in named]
        if any(cells):
            rows.append([*_key_cells(key), *cells])
    return rows


def _key_cells(key: tuple[Any, ...]) -> list[str]:
    workload, loader, batch, mode, threads, world_size, side = key
    extra = [mode if mode != "eager" else "", f"{threads} threads" if threads else "",
             f"{world_size} processes" if world_size > 1 else "", f"{side} side by side" if side > 1 else ""]  # fmt: skip
    return [workload, loader or "–", str(batch), " ".join(e for e in extra if e) or "–"]


HEADERS = ["workload", "loader", "batch", "variant"]


def throughput_table(runs: list[Run], named: list[Column], fmt: str = "github") -> str:
    rows = _rows(runs, named, rate_cell)
    return tabulate(rows, headers=[*HEADERS, *[c.name for c in named]], tablefmt=fmt, disable_numparse=True)


def memory_table(runs: list[Run], named: list[Column], fmt: str = "github") -> str:
    def cell(case: CaseResult | None) -> str:
        if case is None:
            return ""
        own = case.own_device_peak_bytes
        host = fmt_mib(case.peak("host_rss_peak_bytes"))
        return host if own is None else f"{host} / {fmt_mib(own)}"

    rows = _rows(runs, named, cell)
    return tabulate(rows, headers=[*HEADERS, *[c.name for c in named]], tablefmt=fmt, disable_numparse=True)


def fleet_markdown(runs: list[Run]) -> str:
    named = columns(runs)
    parts = [f"# Fleet: {len(runs)} runs, {len(named)} machines", ""]
    parts += [
        f"- `{c.name}`: run {c.run.run_id}, {c.device}, {c.run.created}; {fact_text(c.run.env, 'command_line')}"
        for c in named
    ]
    warnings = differences(runs)
    if warnings:
        parts += ["", "**Warning: the runs differ in ways that change their numbers:**", ""]
        parts += [f"- {line}" for line in warnings]
    parts += [
        "",
        "## Throughput (samples/s, higher is better; `~` noisy)",
        "",
        throughput_table(runs, named),
        "",
        "## Memory (MiB: host peak RSS / device peak of the case's own)",
        "",
        memory_table(runs, named),
        "",
    ]
    return "\n".join(parts)


def fleet_csv(runs: list[Run]) -> str:
    """One row per case of every run, in raw units, with the machine's name."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["machine", "run_id", "host", "device", "device_model", "torch", *ROW_FIELDS, "status",
                     "samples_per_s", "host_rss_peak_bytes", "device_own_peak_bytes", "dataset"])  # fmt: skip
    for column in columns(runs):
        run = column.run
        for case in run.cases:
            if case.device != column.device:
                continue
            writer.writerow(
                [
                    column.name,
                    run.run_id,
                    fact_text(run.env, "host"),
                    case.device,
                    device_model(run, case.device),
                    fact_text(run.env, "torch", "version"),
                    *row_key(case),
                    case.status,
                    case.samples_per_s,
                    case.peak("host_rss_peak_bytes"),
                    case.own_device_peak_bytes,
                    run.dataset.name,
                ]
            )
    return buffer.getvalue()


def write_fleet(runs: list[Run], folder: Path, plot: bool = False) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / FLEET_MD, folder / FLEET_CSV]
    write_atomic(paths[0], fleet_markdown(runs))
    write_atomic(paths[1], fleet_csv(runs))
    if plot:
        paths.append(draw_fleet(runs, folder / FLEET_PNG))
    return paths


def draw_fleet(runs: list[Run], path: Path) -> Path:
    """samples/s against batch size, one panel per workload, one line per machine (eager, one process)."""
    from bench.plots import pyplot, rate_axis, save

    plt = pyplot()
    named = columns(runs)
    workloads = [w for w in WORKLOADS if any(c.workload == w for run in runs for c in run.cases)]
    figure, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 4), squeeze=False)
    for axis, workload in zip(axes.flat, workloads, strict=True):
        for column in named:
            points = sorted(
                (c.batch_size, c.samples_per_s)
                for c in column.run.cases
                if c.device == column.device and c.workload == workload and c.samples_per_s
                and c.mode == "eager" and c.world_size == 1 and c.side_by_side == 1 and c.loader in (None, "resident")
            )  # fmt: skip
            if points:
                axis.plot([b for b, _ in points], [r for _, r in points], marker="o", label=column.name)
        rate_axis(axis, workload, legend_size=6)
    return save(figure, axes, len(workloads), "Fleet: samples/s by machine", path, plt)


def fleet_console(runs: list[Run]) -> str:
    named = columns(runs)
    lines = [f"Fleet: {len(runs)} runs, {len(named)} machines"]
    lines += [f"warning: {line}" for line in differences(runs)]
    return "\n".join([*lines, "", throughput_table(runs, named, fmt="simple")])
