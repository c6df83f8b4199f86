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
from dataclasses import dataclass, replace

from bench.core.facts import fact, fact_text
from bench.core.keys import CaseKey, ordered, sort_key, variant
from bench.core.results import CaseResult, Run
from bench.render.csvfile import KEY_COLUMNS
from bench.render.escape import console_safe, markdown_safe
from bench.render.tables import rate_cell, render
from bench.render.units import fmt_mib

FLEET_MD, FLEET_CSV, FLEET_PNG = "fleet.md", "fleet.csv", "fleet.png"
SETTINGS = ("max_time", "passes", "epochs", "epoch_repeats", "train_runs", "target_accuracy", "quick")
ROW_COLUMNS = tuple(name for name in KEY_COLUMNS if name != "device")


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
        for device in dict.fromkeys(case.key.device for case in run.cases):
            name = f"{fact_text(run.env, 'host')} · {device_model(run, device)} · torch {fact_text(run.env, 'torch', 'version')}"
            named.append(Column(run, device, name))
    counts: dict[str, int] = {}
    for column in named:
        counts[column.name] = counts.get(column.name, 0) + 1
    return [
        Column(c.run, c.device, f"{c.name} · run {c.run.run_id}") if counts[c.name] > 1 else c for c in named
    ]


def row_key(case: CaseResult) -> CaseKey:
    """A fleet row: the case's identity with the device left out (the device is the column)."""
    return replace(case.key, device="")


def differences(runs: list[Run]) -> list[str]:
    """What differs between the runs in ways that change their numbers, one line each."""
    lines = []
    seen: dict[tuple[str, str, str], int] = {}
    for run in runs:  # one run's folder given twice: same id, start and machine
        same = (run.run_id, run.created, fact_text(run.env, "host"))
        seen[same] = seen.get(same, 0) + 1
    for (run_id, created, _host), times in seen.items():
        if times > 1:
            lines.append(
                f"run {run_id} (started {created}) is given {times} times: its columns are one run, repeated"
            )
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
    order = sort_key([""], ordered(case.key.mode for run in runs for case in run.cases))
    keys = sorted({row_key(case) for run in runs for case in run.cases}, key=order)
    index = {
        (id(c.run), c.device, row_key(case)): case
        for c in named
        for case in c.run.cases
        if case.key.device == c.device
    }
    rows = []
    for key in keys:
        cells = [cell(index.get((id(column.run), column.device, key))) for column in named]
        if any(cells):
            rows.append([key.workload, key.loader or "–", str(key.batch_size), variant(key), *cells])
    return rows


HEADERS = ["workload", "loader", "batch", "variant"]


def throughput_table(runs: list[Run], named: list[Column], fmt: str = "github") -> str:
    return render(_rows(runs, named, rate_cell), [*HEADERS, *[c.name for c in named]], fmt)


def memory_table(runs: list[Run], named: list[Column], fmt: str = "github") -> str:
    def cell(case: CaseResult | None) -> str:
        if case is None:
            return ""
        own = case.own_device_peak_bytes
        host = fmt_mib(case.peak("host_rss_peak_bytes"))
        return host if own is None else f"{host} / {fmt_mib(own)}"

    return render(_rows(runs, named, cell), [*HEADERS, *[c.name for c in named]], fmt)


def fleet_markdown(runs: list[Run]) -> str:
    runs = [markdown_safe(run) for run in runs]  # every string from the files escaped, once
    named = columns(runs)
    parts = [f"# Fleet: {len(runs)} runs, {len(named)} machines", ""]
    parts += [
        f"- {c.name}: run {c.run.run_id}, {c.device}, {c.run.created}; `{c.run.command_line or '?'}`"
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
    writer.writerow(["machine", "run_id", "host", "device", "device_model", "torch", *ROW_COLUMNS, "status",
                     "samples_per_s", "host_rss_peak_bytes", "device_own_peak_bytes", "dataset"])  # fmt: skip
    for column in columns(runs):
        run = column.run
        for case in run.cases:
            if case.key.device != column.device:
                continue
            writer.writerow(
                [
                    column.name,
                    run.run_id,
                    fact_text(run.env, "host"),
                    case.key.device,
                    device_model(run, case.key.device),
                    fact_text(run.env, "torch", "version"),
                    *(getattr(case.key, name) for name in ROW_COLUMNS),
                    str(case.status),
                    case.samples_per_s,
                    case.peak("host_rss_peak_bytes"),
                    case.own_device_peak_bytes,
                    run.dataset.name,
                ]
            )
    return buffer.getvalue()


def fleet_console(runs: list[Run]) -> str:
    runs = [console_safe(run) for run in runs]
    named = columns(runs)
    lines = [f"Fleet: {len(runs)} runs, {len(named)} machines"]
    lines += [f"warning: {line}" for line in differences(runs)]
    return "\n".join([*lines, "", throughput_table(runs, named, fmt="simple")])
