"""results.csv: one row per case in raw units (seconds, bytes, samples/s) for spreadsheets and scripts.

The columns are the case's identity (every field of CaseKey), its status, every figure of
`analysis.metrics.Figures` (so every figure a table of the summary shows), and the run's dataset,
torch and id. Lists are joined with `; `; what does not apply is empty.
"""

from __future__ import annotations

import csv
import io
from dataclasses import fields
from typing import Any

from bench.analysis.metrics import Figures, figures
from bench.core.facts import fact
from bench.core.keys import CaseKey
from bench.core.results import Run
from bench.render.tables import sorted_cases

CSV_FILE = "results.csv"
KEY_COLUMNS = tuple(f.name for f in fields(CaseKey))
FIGURE_COLUMNS = tuple(f.name for f in fields(Figures))
CSV_COLUMNS = (*KEY_COLUMNS, "status", "error", *FIGURE_COLUMNS, "dataset", "synthetic", "torch", "run_id")


def csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "; ".join("" if item is None else str(item) for item in value)
    return value


def csv_text(run: Run) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    cases = sorted_cases(run)
    by_key = figures(run, cases)
    for case in cases:
        row: dict[str, Any] = {name: getattr(case.key, name) for name in KEY_COLUMNS}
        row.update(status=str(case.status), error=case.error)
        row.update({name: getattr(by_key[case.key], name) for name in FIGURE_COLUMNS})
        row.update(
            dataset=run.dataset.name,
            synthetic=run.dataset.synthetic,
            torch=fact(run.env, "torch", "version"),
            run_id=run.run_id,
        )
        writer.writerow({name: csv_value(value) for name, value in row.items()})
    return buffer.getvalue()
