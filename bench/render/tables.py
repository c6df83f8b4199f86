"""Tables as data: a table is a list of columns, each reading one case's figures; two builders lay them out.

* `case_table`: one row per case, its columns around the dimensions the run varies (mode, threads,
  processes, ...), which get a column each only where the run varies them.
* `grid`: one row per workload, loader, device (and varied dimension), one column per batch size.

A column names the figure it shows (`Column.figure`, a field of `analysis.metrics.Figures` and so a
column of results.csv), so a test can check that every figure a table shows is in the CSV too. The
mark of a noisy cell and the words of a failed one are decided here once (`rate_cell`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from bench.analysis.metrics import Figures, figures
from bench.core.catalog import Status
from bench.core.keys import Dimension, dimension_cells, dimension_headers, ordered, sort_key, varied
from bench.core.results import CaseResult, Run
from bench.render.units import fmt_rate

NOISY_MARK = " ~"
STATUS_CELL = {Status.OOM: "OOM", Status.ERROR: "error", Status.SKIPPED: "skipped", Status.INVALID: "invalid"}


@dataclass(frozen=True)
class Cell:
    """What a column reads: the case, its figures and its run."""

    case: CaseResult
    figures: Figures
    run: Run


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Cell], Any]
    figure: str | None = None  # the Figures field (results.csv column) this column shows


def status_cell(case: CaseResult) -> str:
    return STATUS_CELL.get(case.status, str(case.status))


CONTENDED_MARK = " ‼"  # its passes waited for CPUs other work held: not to be trusted (not `~`: noise)
DEVICE_MARK = " †"  # its GPU throttled or served other processes during its passes


def rate_cell(case: CaseResult | None) -> str:
    """A throughput cell: the number, `~` when noisy, or OOM/error/skipped/invalid: never a number for those."""
    if case is None:
        return ""
    if not case.ok:
        return status_cell(case)
    mark = CONTENDED_MARK if case.contended else DEVICE_MARK if case.device_marks else ""
    return fmt_rate(case.samples_per_s) + (mark or (NOISY_MARK if case.noisy else ""))


def devices_of(run: Run) -> list[str]:
    return ordered((c.key.device for c in run.cases), ["cpu"])


def row_order(run: Run) -> Callable[[CaseResult], tuple[Any, ...]]:
    order = sort_key(devices_of(run), list(run.options.modes))
    return lambda case: order(case.key)


def sorted_cases(run: Run, cases: Iterable[CaseResult] | None = None) -> list[CaseResult]:
    return sorted(run.cases if cases is None else cases, key=row_order(run))


def shown_dimensions(run: Run, exclude: Sequence[str] = ()) -> list[Dimension]:
    return [d for d in varied(c.key for c in run.cases) if d.field not in exclude]


def case_table(
    run: Run,
    cases: Iterable[CaseResult],
    before: Sequence[Column],
    after: Sequence[Column],
    fmt: str = "github",
    exclude: Sequence[str] = (),
    dimensions: bool = True,
) -> str:
    """One row per case (in row order): the `before` columns, the varied dimensions (but `exclude`),
    then the `after` columns."""
    shown = shown_dimensions(run, exclude) if dimensions else []
    chosen = sorted_cases(run, cases)
    by_key = figures(run, chosen)
    rows = []
    for case in chosen:
        cell = Cell(case, by_key[case.key], run)
        rows.append(
            [
                *(column.value(cell) for column in before),
                *dimension_cells(case.key, shown),
                *(column.value(cell) for column in after),
            ]
        )
    headers = [*(c.header for c in before), *dimension_headers(shown), *(c.header for c in after)]
    return render(rows, headers, fmt)


def grid(
    run: Run,
    cell: Callable[[Cell], str],
    include: Callable[[CaseResult], bool] = lambda case: True,
    fmt: str = "github",
) -> str:
    """One row per workload, loader, device (and varied dimension), one column per batch size."""
    shown = shown_dimensions(run)
    sizes = sorted({c.key.batch_size for c in run.cases})
    chosen = [c for c in sorted_cases(run) if include(c)]
    by_key = figures(run, chosen)
    rows: dict[tuple[Any, ...], list[str]] = {}
    for case in chosen:
        key = case.key
        row = rows.setdefault(
            (key.workload, key.loader, key.device, *[getattr(key, d.field) for d in shown]),
            [key.workload, key.loader or "–", key.device, *dimension_cells(key, shown)] + [""] * len(sizes),
        )
        row[3 + len(shown) + sizes.index(key.batch_size)] = cell(Cell(case, by_key[key], run))
    headers = ["workload", "loader", "device", *dimension_headers(shown), *[f"batch {s}" for s in sizes]]
    return render(list(rows.values()), headers, fmt)


def render(rows: list[list[Any]], headers: list[str], fmt: str) -> str:
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


# the identity columns most tables start with
WORKLOAD = Column("workload", lambda c: c.case.key.workload)
LOADER = Column("loader", lambda c: c.case.key.loader or "–")
DEVICE = Column("device", lambda c: c.case.key.device)
BATCH = Column("batch", lambda c: c.case.key.batch_size)
