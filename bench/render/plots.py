"""PNG plots of a run: throughput and memory against batch size. Optional (matplotlib, the `plot` extra).

Failed cells (OOM, error) are left out of the lines and marked with an x at the bottom of their panel,
so a missing point never reads as a low number.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.core.catalog import MIB, WORKLOADS, dataset_display_name
from bench.core.errors import UsageError
from bench.core.keys import line_label, variant
from bench.core.results import CaseResult, Run
from bench.core.store import write_atomic

THROUGHPUT_PNG = "throughput.png"
MEMORY_PNG = "memory.png"
MODES_PNG = "modes.png"


def require_matplotlib() -> None:
    """Fails before anything is measured when --plot cannot work here."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(
            "--plot needs matplotlib, which is not installed",
            hint="install it where bench runs: pip install matplotlib (in a checkout: pip install -e '.[plot]')",
        ) from None


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only (no display), or a UsageError when it is missing."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lines(cases: list[CaseResult]) -> dict[str, list[CaseResult]]:
    """The lines of one throughput panel: cases by their line label, each line by batch size."""
    lines: dict[str, list[CaseResult]] = defaultdict(list)
    for case in cases:
        lines[line_label(case.key)].append(case)
    return {label: sorted(points, key=lambda c: c.key.batch_size) for label, points in sorted(lines.items())}


def draw_plots(run: Run, folder: Path) -> list[Path]:
    """Writes throughput.png (one panel per workload) and memory.png into `folder`; returns their paths."""
    plt = pyplot()
    workloads = [w for w in WORKLOADS if any(c.key.workload == w for c in run.cases)]
    title = f"run {run.run_id} · " + (
        "SYNTHETIC data" if run.dataset.synthetic else dataset_display_name(run.dataset.name)
    )
    if run.partial:
        title += " · PARTIAL"

    figure, axes = _panels(plt, len(workloads))
    for axis, workload in zip(axes.flat, workloads, strict=False):
        for label, points in plot_lines([c for c in run.cases if c.key.workload == workload]).items():
            _rate_line(axis, points, label)
        rate_axis(axis, workload)
    throughput = save(figure, axes, len(workloads), f"Throughput · {title}", folder / THROUGHPUT_PNG, plt)

    fields = [
        ("host_rss_peak_bytes", "host peak RSS (MiB)"),
        ("own_device_peak_bytes", "device peak, own: above the baseline (MiB)"),
    ]
    figure, axes = plt.subplots(1, len(fields), figsize=(6 * len(fields), 4), squeeze=False)
    for axis, (name, label) in zip(axes.flat, fields, strict=True):
        by_line: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for case in run.cases:
            value = case.own_device_peak_bytes if name == "own_device_peak_bytes" else case.peak(name)
            if value is not None:
                by_line[line_label(case.key, with_workload=True)].append((case.key.batch_size, value))
        for line, readings in sorted(by_line.items()):
            readings.sort()
            axis.plot([b for b, _ in readings], [v / MIB for _, v in readings], marker=".", label=line)
        if not by_line:
            axis.set_title(label)
            axis.text(0.5, 0.5, "no GPU in this run", ha="center", va="center", transform=axis.transAxes)
            axis.set_xticks([])
            axis.set_yticks([])
            continue
        batch_axis(axis, label, "MiB", legend_size=6)
    memory = save(figure, axes, len(fields), f"Memory · {title}", folder / MEMORY_PNG, plt)
    paths = [throughput, memory]
    if len({case.key.mode for case in run.cases}) > 1:
        paths.append(draw_modes(run, folder, title, plt))
    return paths


def draw_modes(run: Run, folder: Path, title: str, plt: Any) -> Path:
    """modes.png: one panel per device and workload, one line per mode (samples/s against batch size)."""
    panels: dict[str, dict[str, list[CaseResult]]] = defaultdict(lambda: defaultdict(list))
    for case in run.cases:
        panel = line_label(replace(case.key, mode="eager"), with_workload=True)
        panels[panel][case.key.mode].append(case)
    figure, axes = _panels(plt, len(panels))
    for axis, (panel, by_mode) in zip(axes.flat, sorted(panels.items()), strict=False):
        for mode_name, points in by_mode.items():
            _rate_line(axis, points, mode_name)
        rate_axis(axis, panel, title_size=9)
    return save(figure, axes, len(panels), f"Modes · {title}", folder / MODES_PNG, plt)


def batch_axis(axis: Any, title: str, unit: str, title_size: int | None = None, legend_size: int = 7) -> None:
    """A panel of a figure against batch size (log2), the way every plot here draws it."""
    axis.set_title(title, fontsize=title_size)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("batch size")
    axis.set_ylabel(unit)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=legend_size)


def _panels(plt: Any, count: int) -> tuple[Any, Any]:
    """A grid of up to 3 panels a row, one per workload (or per mode panel)."""
    columns = min(3, max(1, count))
    rows = (count + columns - 1) // columns
    return plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), squeeze=False)


def _rate_line(axis: Any, cases: list[CaseResult], label: str) -> None:
    """Samples/s against batch size for the measured cases; the failed ones as red crosses at zero, named."""
    good = sorted((c for c in cases if c.ok and c.samples_per_s), key=lambda c: c.key.batch_size)
    if good:
        axis.plot([c.key.batch_size for c in good], [c.samples_per_s for c in good], marker="o", label=label)
    contended = [c for c in good if c.contended]
    if contended:  # drawn, but ringed: these points are not to be trusted
        axis.scatter([c.key.batch_size for c in contended], [c.samples_per_s for c in contended], s=120,
                     facecolors="none", edgecolors="orange", label=f"{label}: contended ‼")  # fmt: skip
    failed = [c for c in cases if not c.ok]
    if failed:
        statuses = "/".join(sorted({c.status.upper() for c in failed}))
        axis.scatter([c.key.batch_size for c in failed], [0] * len(failed), marker="x", color="red",
                     label=f"{label}: {statuses}")  # fmt: skip


def rate_axis(axis: Any, title: str, title_size: int | None = None, legend_size: int = 7) -> None:
    batch_axis(axis, title, "samples/s", title_size, legend_size)


def save(figure: Any, axes: Any, used: int, title: str, path: Path, plt: Any) -> Path:
    """Blanks the panels left over, titles the figure and writes it."""
    for axis in list(axes.flat)[used:]:
        axis.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=110)
    plt.close(figure)
    write_atomic(path, image.getvalue())  # the run folder's one writer
    return path


def draw_fleet(runs: list[Run], path: Path) -> Path:
    """samples/s against batch size, one panel per workload, one line per machine (eager, one process)."""
    from bench.render.fleet import columns

    plt = pyplot()
    named = columns(runs)
    workloads = [w for w in WORKLOADS if any(c.key.workload == w for run in runs for c in run.cases)]
    figure, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 4), squeeze=False)
    for axis, workload in zip(axes.flat, workloads, strict=True):
        for column in named:
            points = sorted(
                (c.key.batch_size, c.samples_per_s)
                for c in column.run.cases
                if c.key.device == column.device and c.key.workload == workload and c.samples_per_s
                and variant(c.key) == "–" and c.key.loader in (None, "resident")
            )  # fmt: skip
            if points:
                axis.plot([b for b, _ in points], [r for _, r in points], marker="o", label=column.name)
        rate_axis(axis, workload, legend_size=6)
    return save(figure, axes, len(workloads), "Fleet: samples/s by machine", path, plt)
