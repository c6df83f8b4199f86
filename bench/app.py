"""The jobs behind the commands: check, run (one process, a supervisor of ranks, or one rank), report,
compare. Each claims and writes its folder, collects the facts, loads the data, hands the cases to
the engine and writes every artifact (summary.md, results.csv, plots, fleet tables) in one place.

Exit status: 0 success; 1 a check failed, a case errored, or `compare --fail-above` found a
slowdown; 2 bad input (nothing was measured or changed); 130 a run stopped by Ctrl-C (its finished
cases are saved and rendered).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.core.catalog import Status, dataset_display_name
from bench.core.envvars import env_int, env_path, env_text
from bench.core.errors import BenchError, UsageError
from bench.core.plan import Options, plan
from bench.core.results import CheckLine, ProcessFacts, Run
from bench.core.schema import load_run, resolve_results_path
from bench.core.store import (
    PYTEST_BENCHMARK_FILE,
    RESULTS_FILE,
    default_run_folder,
    new_run_id,
    prepare_run_folder,
    save_run,
    utc_now,
    write_atomic,
)
from bench.engine.launch import COMMAND_LINE_ENV
from bench.env.check import CheckReport
from bench.render.csvfile import CSV_FILE, csv_text
from bench.render.summary import SUMMARY_FILE, console_summary, summary_markdown

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- the install check -----------------------------------------------------------------------------


def install_check(require: Sequence[str] = (), env: dict[str, Any] | None = None) -> CheckReport:
    """The install check with its real computations on every device."""
    from bench.env.check import run_check
    from bench.measure.probes import PROBES

    return run_check(PROBES, require=tuple(require), env=env)


def check_job(as_json: bool, require: Sequence[str]) -> int:
    from bench.render.check import check_table

    report = install_check(require)
    print(json.dumps(report.to_dict(), indent=2, default=str) if as_json else check_table(report))
    return EXIT_OK if report.passed else EXIT_FAILED


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


# --- bench run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRequest:
    """What `bench run` was asked for, beyond the Options of what to measure."""

    options: Options
    argv: tuple[str, ...]
    out: Path | None = None
    dataset: str = "auto"
    data_dir: Path | None = None
    download: bool = True
    plot: bool = False
    check: bool = False
    require: tuple[str, ...] = ()
    resume: bool = False


def new_run(request: RunRequest, facts: dict[str, Any], check: CheckReport, dataset: Any, run_id: str) -> Run:
    return Run(
        run_id=run_id,
        created=utc_now(),
        env=facts,
        dataset=dataset.info,
        options=request.options,
        planned_cases=len(plan(request.options)),
        command_line=env_text(COMMAND_LINE_ENV) or shlex.join(["bench", *request.argv]),
        check=[CheckLine(**line) for line in check.to_dict()["lines"]],
    )


def collect_facts(request: RunRequest) -> tuple[dict[str, Any], CheckReport]:
    from bench.env.collect import collect_all

    facts = collect_all()
    return facts, install_check(request.require, env=facts)


def check_user_models(options: Options) -> None:
    """Each of the user's own models imported, built and run forward once before anything is measured:
    a spec that cannot work is a UsageError naming it (exit 2), and nothing else of the run starts."""
    from bench.core.models import is_user_spec
    from bench.core.plan import batch_sizes_for
    from bench.measure.userspec import check_user_model

    for model in options.models:
        if is_user_spec(model):
            check_user_model(model, min(batch_sizes_for(model, options)))


def run_job(request: RunRequest) -> int:
    """`bench run` in the process the user started: one process, or the supervisor of torchrun's ranks."""
    from bench.measure.data import load_dataset

    check_user_models(request.options)
    if request.plot:
        from bench.render.plots import require_matplotlib

        require_matplotlib()
    run_id = new_run_id()
    folder = request.out if request.out else default_run_folder(Path("results"), run_id)
    prepare_run_folder(folder)
    facts, check = collect_facts(request)
    if request.check:
        from bench.render.check import check_table

        print(check_table(check))
        if not check.passed:
            print("bench run: the install check failed; nothing was measured", file=sys.stderr)
            _remove_if_empty(folder)
            return EXIT_FAILED
    elif not check.passed:
        failed = ", ".join(line.name for line in check.lines if line.verdict == "FAIL")
        print(f"warning: install check failed ({failed}); run `bench check` for details", file=sys.stderr)
    try:
        dataset = load_dataset(request.dataset, request.data_dir, download=request.download)
    except BenchError:
        _remove_if_empty(folder)
        raise
    if dataset.info.note:
        print(f"dataset: {dataset_display_name(dataset.info.name)}: {dataset.info.note}", file=sys.stderr)
    print(f"bench run: {folder}", file=sys.stderr)
    if request.options.nproc > 1:
        from bench.engine.launch import supervise

        run = supervise([*request.argv, "--no-download"], request.options.nproc, folder)
    else:
        from bench.engine.session import run_sweep

        run = new_run(request, facts, check, dataset, run_id)
        try:
            run_sweep(run, request.options, dataset, folder, say)
        finally:
            write_tables(run, folder)
    return finish_run(request, run, folder)


def finish_run(request: RunRequest, run: Run, folder: Path) -> int:
    write_tables(run, folder)
    if request.plot:
        write_plots(run, folder)
    print(console_summary(run))
    print(f"\nResults: {folder}/ ({', '.join(written_files(run, folder))})")
    if run.state == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_FAILED if any(case.status == Status.ERROR for case in run.cases) else EXIT_OK


def rank_job(request: RunRequest) -> int:
    """One rank of several (torchrun set WORLD_SIZE): rank 0 sweeps and writes the folder, the others follow.

    A rank exits 0 whatever its cases did, so torchrun only reports real failures; a rank that fails
    leaves a fault report for the supervisor (bench.engine.launch) before it goes.
    """
    from bench.engine.distributed import World
    from bench.engine.launch import FAULT_DIR_ENV, write_fault
    from bench.engine.session import run_sweep
    from bench.measure.data import load_dataset

    options = request.options
    world = World.join(options.devices[0])
    try:
        if options.devices[0] == "cpu" and options.threads[0] is not None:
            import torch

            torch.set_num_threads(options.threads[0])
        run_id = new_run_id()
        folder = request.out if request.out else default_run_folder(Path("results"), run_id)
        restarted = env_int("TORCHELASTIC_RESTART_COUNT", 0) > 0
        dataset = load_dataset(request.dataset, request.data_dir, download=request.download and world.leader)
        resumed = world.leader and (request.resume or restarted) and (folder / RESULTS_FILE).exists()
        if resumed:
            run = load_run(folder)
        elif world.leader:
            prepare_run_folder(folder)
            facts, check = collect_facts(request)
            run = new_run(request, facts, check, dataset, run_id)
            run.processes = ProcessFacts(world.size, world.nnodes, world.backend, options.threads[0])
        else:
            run = Run(run_id, utc_now(), {}, dataset.info, options)
        try:
            run_sweep(run, options, dataset, folder, say, world=world, resumed=resumed)
        finally:
            if world.leader:
                write_tables(run, folder)
        if world.leader and env_path(FAULT_DIR_ENV) is None:  # torchrun started it, not bench run --nproc
            finish_run(request, run, folder)
        return EXIT_OK
    except BaseException as error:
        write_fault(error, world.rank)
        raise
    finally:
        world.leave()


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


# --- bench report and bench compare ------------------------------------------------------------------


def report_job(targets: Sequence[Path], plot: bool, out: Path | None) -> int:
    runs = [load_run(target) for target in targets]
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
    except OSError as error:
        raise UsageError(
            f"cannot write the tables into {folder}: {error.strerror or error}",
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
    print(fleet_console(runs))
    print(f"\nWrote {', '.join(str(path) for path in paths)}")
    return EXIT_OK


def compare_job(
    baseline: Path, candidate: Path, min_effect: float, fail_above: float | None, out: Path | None
) -> int:
    from bench.analysis.compare import compare_runs
    from bench.render.comparison import comparison_markdown

    comparison = compare_runs(load_run(baseline), load_run(candidate), min_effect=min_effect / 100)
    text = comparison_markdown(comparison)
    if out:
        try:
            out.write_text(text + "\n", encoding="utf-8")
        except OSError as error:
            raise UsageError(
                f"cannot write {out}: {error.strerror or error}", hint="give --out a writable path"
            ) from None
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
