"""PNG plots of a run: throughput and memory against batch size. Optional (matplotlib, the `plot` extra).

Failed cells (OOM, error) are left out of the lines and marked with an x at the bottom of their panel,
so a missing point never reads as a low number.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from bench.catalog import WORKLOADS
from bench.errors import UsageError
from bench.results import CaseResult, Run

THROUGHPUT_PNG = "throughput.png"
MEMORY_PNG = "memory.png"
MIB = 2**20


def require_matplotlib() -> None:
    """Fails before anything is measured when --plot cannot work here."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(
            "--plot needs matplotlib, which is not installed",
            hint="install it where bench runs: pip install matplotlib (in a checkout: pip install -e '.[plot]')",
        ) from None


def _series(cases: list[CaseResult]) -> dict[str, list[CaseResult]]:
    lines: dict[str, list[CaseResult]] = defaultdict(list)
    for case in cases:
        label = case.device + (f" [{case.loader}]" if case.loader and case.workload == "epoch" else "")
        lines[label].append(case)
    return {label: sorted(points, key=lambda c: c.batch_size) for label, points in sorted(lines.items())}


def draw_plots(run: Run, folder: Path) -> list[Path]:
    """Writes throughput.png (one panel per workload) and memory.png into `folder`; returns their paths."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    workloads = [w for w in WORKLOADS if any(c.workload == w for c in run.cases)]
    title = f"run {run.run_id} · {run.dataset.get('name')}" + (
        " (SYNTHETIC)" if run.dataset.get("synthetic") else ""
    )
    if run.partial:
        title += " · PARTIAL"

    columns = min(3, max(1, len(workloads)))
    rows = (len(workloads) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), squeeze=False)
    for axis, workload in zip(axes.flat, workloads, strict=False):
        for label, points in _series([c for c in run.cases if c.workload == workload]).items():
            good = [c for c in points if c.ok and c.samples_per_s]
            if good:
                axis.plot(
                    [c.batch_size for c in good], [c.samples_per_s for c in good], marker="o", label=label
                )
            failed = [c for c in points if not c.ok]
            if failed:
                axis.scatter([c.batch_size for c in failed], [0] * len(failed), marker="x", color="red",
                             label=f"{label}: {'/'.join(sorted({c.status.upper() for c in failed}))}")  # fmt: skip
        axis.set_title(workload)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("batch size")
        axis.set_ylabel("samples/s")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(workloads) :]:
        axis.axis("off")
    figure.suptitle(f"Throughput · {title}")
    figure.tight_layout()
    throughput = folder / THROUGHPUT_PNG
    figure.savefig(throughput, dpi=110)
    plt.close(figure)

    fields = [
        ("host_rss_peak_bytes", "host peak RSS (MiB)"),
        ("device_peak_allocated_bytes", "device peak allocated (MiB)"),
    ]
    figure, axes = plt.subplots(1, len(fields), figsize=(6 * len(fields), 4), squeeze=False)
    for axis, (name, label) in zip(axes.flat, fields, strict=True):
        by_line: dict[str, list[CaseResult]] = defaultdict(list)
        for case in run.cases:
            if getattr(case, name) is not None:
                by_line[
                    f"{case.workload} · {case.device}" + (f" [{case.loader}]" if case.loader else "")
                ].append(case)
        for line, points in sorted(by_line.items()):
            points.sort(key=lambda c: c.batch_size)
            axis.plot(
                [c.batch_size for c in points],
                [getattr(c, name) / MIB for c in points],
                marker=".",
                label=line,
            )
        axis.set_title(label)
        if not by_line:
            axis.text(0.5, 0.5, "no GPU in this run", ha="center", va="center", transform=axis.transAxes)
            axis.set_xticks([])
            axis.set_yticks([])
            continue
        axis.set_xscale("log", base=2)
        axis.set_xlabel("batch size")
        axis.set_ylabel("MiB")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=6)
    figure.suptitle(f"Memory · {title}")
    figure.tight_layout()
    memory = folder / MEMORY_PNG
    figure.savefig(memory, dpi=110)
    plt.close(figure)
    return [throughput, memory]
