"""The jobs that read run folders: `bench report` (one run, or a fleet of them), `bench compare` and
`bench redact`; and the artifacts every job writes into a run folder (summary.md, results.csv, plots),
which `bench run` (bench.app) writes through the same functions. Nothing here measures or imports torch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError, WriteFailure
from bench.core.results import CaseResult, Run
from bench.core.schema import load_run, resolve_results_path
from bench.core.store import PYTEST_BENCHMARK_FILE, RESULTS_FILE, new_run_id, save_run, write_atomic
from bench.render.csvfile import CSV_FILE, csv_text
from bench.render.summary import SUMMARY_FILE, console_summary, summary_markdown

EXIT_OK, EXIT_FAILED = 0, 1


# --- artifacts -------------------------------------------------------------------------------------


def write_tables(run: Run, folder: Path) -> list[Path]:
    """Writes summary.md and results.csv next to results.json (atomically, like the results)."""
    summary, table = folder / SUMMARY_FILE, folder / CSV_FILE
    write_atomic(summary, summary_markdown(run))
    write_atomic(table, csv_text(run))
    return [summary, table]


def write_plots(run: Run, folder: Path) -> list[Path]:
    from bench.render.plots import draw_plots

    paths = draw_plots(run, folder)
    run.plots = [path.name for path in paths]
    save_run(run, folder)
    write_tables(run, folder)
    return paths


def written_files(run: Run, folder: Path) -> list[str]:
    """The files of a run folder that exist, in the order people read them."""
    names = [SUMMARY_FILE, CSV_FILE, RESULTS_FILE, PYTEST_BENCHMARK_FILE, *run.plots]
    return [name for name in names if (folder / name).exists()]


# --- bench report and bench compare ------------------------------------------------------------------


def redact_job(target: Path) -> int:
    """`bench redact DIR`: the run's files rewritten with names replaced, its tables written again."""
    from bench.core.redact import redact_folder, redactor_for

    run, folder = load_run(target), resolve_results_path(target).parent
    run = redact_folder(run, folder, redactor_for(run.env))
    written = write_tables(run, folder)
    print(
        f"Redacted {folder}/ ({', '.join(written_files(run, folder))}); {len(written)} tables written again"
    )
    return EXIT_OK


def report_job(targets: Sequence[Path], plot: bool, out: Path | None, redact: bool = False) -> int:
    runs = [load_run(target) for target in targets]
    if redact:  # what is rendered; the results files stay as they are (bench redact rewrites them)
        from bench.core.redact import redact_run, redactor_for

        runs = [redact_run(run, redactor_for(run.env)) for run in runs]
    if plot:
        from bench.render.plots import require_matplotlib

        require_matplotlib()
    if len(runs) > 1:
        return fleet_job(runs, plot, out)
    run, folder = runs[0], resolve_results_path(targets[0]).parent
    try:
        write_tables(run, folder)
        if plot:
            write_plots(run, folder)
    except WriteFailure as error:  # what a report is given is bad input here: exit 2
        raise UsageError(
            f"cannot write the tables into {folder}: {error.message}",
            hint="copy the run folder somewhere writable and report that copy",
        ) from None
    print(console_summary(run))
    print(f"\nWrote {', '.join(str(folder / name) for name in [SUMMARY_FILE, CSV_FILE, *run.plots])}")
    return EXIT_OK


def fleet_job(runs: list[Run], plot: bool, out: Path | None) -> int:
    from bench.render.fleet import FLEET_CSV, FLEET_MD, FLEET_PNG, fleet_console, fleet_csv, fleet_markdown

    folder = out or Path("results") / f"fleet-{datetime.now():%Y-%m-%d}-{new_run_id()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / FLEET_MD, folder / FLEET_CSV]
        write_atomic(paths[0], fleet_markdown(runs))
        write_atomic(paths[1], fleet_csv(runs))
        if plot:
            from bench.render.plots import draw_fleet

            paths.append(draw_fleet(runs, folder / FLEET_PNG))
    except OSError as error:
        raise UsageError(f"cannot write the fleet tables into {folder}: {error.strerror or error}") from None
    except WriteFailure as error:
        raise UsageError(f"cannot write the fleet tables into {folder}: {error.message}") from None
    print(fleet_console(runs))
    print(f"\nWrote {', '.join(str(path) for path in paths)}")
    return EXIT_OK


def profile_changes(runs: tuple[Run, Run], folders: tuple[Path, Path]) -> dict[str, list[Any]]:
    """For each case both runs profiled: the ops whose time changed most, from their op tables."""
    import csv

    from bench.analysis.profile_diff import op_changes

    def table(case: CaseResult, folder: Path) -> list[dict[str, str]] | None:
        path = next((folder / p for p in case.profiles if p.endswith(".ops.csv")), None)
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8", newline="") as file:
                return list(csv.DictReader(file))
        except (OSError, csv.Error, UnicodeDecodeError):  # a table gone or damaged: that case is left out
            return None

    changes = {}
    for case_a in runs[0].cases:
        case_b = runs[1].case(case_a.key)
        if case_b is None or not case_a.profiles or not case_b.profiles:
            continue
        rows_a, rows_b = table(case_a, folders[0]), table(case_b, folders[1])
        if rows_a is not None and rows_b is not None:
            changes[case_a.key.label()] = op_changes(rows_a, rows_b)
    return changes


def compare_job(
    baseline: Path, candidate: Path, min_effect: float, fail_above: float | None, out: Path | None
) -> int:
    from bench.analysis.compare import compare_runs
    from bench.render.comparison import comparison_markdown, op_changes_markdown

    runs = load_run(baseline), load_run(candidate)
    comparison = compare_runs(*runs, min_effect=min_effect / 100)
    text = comparison_markdown(comparison)
    profiled = profile_changes(
        runs, (resolve_results_path(baseline).parent, resolve_results_path(candidate).parent)
    )
    if profiled:
        text += "\n\n" + op_changes_markdown(profiled)
    if out:
        try:
            write_atomic(out, text + "\n")
        except WriteFailure as error:
            raise UsageError(error.message, hint="give --out a writable path") from None
    print(text)
    if fail_above is not None:
        slower = comparison.slowdowns_above(fail_above)
        if slower:
            names = "; ".join(f"{row.key.label()} {row.change_percent:+.1f}%" for row in slower)
            print(
                f"bench compare: {len(slower)} case(s) slower than A by more than {fail_above:g}%: {names}",
                file=sys.stderr,
            )
            return EXIT_FAILED
    return EXIT_OK
