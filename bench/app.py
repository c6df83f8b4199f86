"""The jobs that measure: check, and run (one process, a supervisor of ranks, or one rank). A run claims
and writes its folder, collects the facts, loads the data, hands the cases to the engine and writes
every artifact through bench.reading (which also holds the jobs that only read: report, compare,
redact).

Exit status: 0 success; 1 a check failed, a case errored, or `compare --fail-above` found a
slowdown; 2 bad input (nothing was measured or changed); 128 + the signal's number for a run stopped
by one: 130 Ctrl-C (SIGINT), 143 SIGTERM, 129 SIGHUP (its finished cases are saved and rendered).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core.catalog import Status, dataset_display_name
from bench.core.envvars import env_int, env_path, env_text
from bench.core.errors import BenchError, UsageError
from bench.core.plan import Options, plan
from bench.core.results import CheckLine, ProcessFacts, Run
from bench.core.schema import load_run
from bench.core.stopping import exit_code_for, interrupt_of, signals_deferred, signals_interrupt
from bench.core.store import (
    RESULTS_FILE,
    default_run_folder,
    new_run_id,
    prepare_run_folder,
    release_run_folder,
    save_run,
    utc_now,
    write_atomic,
)
from bench.engine.launch import COMMAND_LINE_ENV
from bench.env.check import CheckReport
from bench.reading import write_plots, write_tables, written_files
from bench.render.header import how_it_ended
from bench.render.summary import console_summary

EXIT_OK, EXIT_FAILED = 0, 1

if TYPE_CHECKING:
    from bench.engine.ab import ABRequest


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
    redact: bool = False  # hosts, users, homes, processes, git and GPU ids replaced (bench.core.redact)

    def default_folder(self, run_id: str) -> Path:
        from bench.core.redact import redacted_host

        return default_run_folder(Path("results"), run_id, redacted_host() if self.redact else None)


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
    check = install_check(request.require, env=facts)
    if request.redact:  # from the first save on (the rest of the run at its end, in finish_run)
        from bench.core.redact import redactor_for

        facts = redactor_for(facts).tree(facts)
    return facts, check


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
    """`bench run` in the process the user started: one process, or the supervisor of torchrun's ranks.

    From the claim of its folder to the last table, SIGINT, SIGTERM and SIGHUP take one path
    (bench.core.stopping): the cases finished so far are saved and rendered, and the exit status is
    128 + the signal's number."""
    check_user_models(request.options)
    if request.plot:
        from bench.render.plots import require_matplotlib

        require_matplotlib()
    run_id = new_run_id()
    folder = request.out or request.default_folder(run_id)
    with signals_interrupt():
        prepare_run_folder(folder, run_id)
        try:
            run = _measured_run(request, folder, run_id)
            if run is None:
                return EXIT_FAILED
            with signals_deferred():  # the stop is under way: the tables are written whole
                return finish_run(request, run, folder)
        finally:
            release_run_folder(folder)


def _measured_run(request: RunRequest, folder: Path, run_id: str) -> Run | None:
    """The run, measured or stopped part way; None when the install check failed (nothing measured)."""
    from bench.engine.session import run_sweep
    from bench.measure.data import load_dataset

    try:
        facts, check = collect_facts(request)
        if request.check:
            from bench.render.check import check_table

            print(check_table(check))
            if not check.passed:
                print("bench run: the install check failed; nothing was measured", file=sys.stderr)
                _remove_if_empty(folder)
                return None
        elif not check.passed:
            failed = ", ".join(line.name for line in check.lines if line.verdict == "FAIL")
            print(f"warning: install check failed ({failed}); run `bench check` for details", file=sys.stderr)
        dataset = load_dataset(request.dataset, request.data_dir, download=request.download)
    except BaseException:  # bad data, or a signal: nothing was measured, so no folder is left behind
        _remove_if_empty(folder)
        raise
    if dataset.info.note:
        print(f"dataset: {dataset_display_name(dataset.info.name)}: {dataset.info.note}", file=sys.stderr)
    print(f"bench run: {folder}", file=sys.stderr)
    if request.options.nproc > 1:
        from bench.engine.launch import supervise

        try:
            return supervise([*request.argv, "--no-download"], request.options.nproc, folder)
        except KeyboardInterrupt:  # stopped before rank 0 saved anything
            _remove_if_empty(folder)
            raise
    run = new_run(request, facts, check, dataset, run_id)
    try:
        run_sweep(run, request.options, dataset, folder, say)
    except KeyboardInterrupt as error:  # a signal before or after the sweep's own session
        run.interrupted_by(interrupt_of(error).name)
        save_run(run, folder)
    except BaseException:
        with signals_deferred():
            _tables_if_possible(run, folder)
        raise
    return run


def _tables_if_possible(run: Run, folder: Path) -> None:
    """The tables of a run that failed: whatever the folder still takes (the failure is what is reported)."""
    try:
        write_tables(run, folder)
    except BenchError:
        pass


def finish_run(request: RunRequest, run: Run, folder: Path) -> int:
    """Files first, then the console: a terminal that cannot show a character costs no table."""
    if request.redact:
        from bench.core.redact import redact_folder, redactor_for

        run = redact_folder(run, folder, redactor_for(run.env))
    write_tables(run, folder)
    if request.plot:
        write_plots(run, folder)
    print(console_summary(run))
    print(f"\nResults: {folder}/ ({', '.join(written_files(run, folder))})")
    if run.state == "interrupted":
        missing = run.planned_cases - len(run.cases)
        kept = f"{len(run.cases)} of {run.planned_cases} planned cases kept"
        rest = f"; the {missing} missing ones need a new run into another --out" if missing > 0 else ""
        say(f"bench run: {how_it_ended(run)}: {kept}{rest}; `bench report {folder}` renders them again")
        return exit_code_for(run.stopped_by)
    return EXIT_FAILED if any(case.status == Status.ERROR for case in run.cases) else EXIT_OK


def rank_job(request: RunRequest) -> int:
    """One rank of several (torchrun set WORLD_SIZE): rank 0 sweeps and writes the folder, the others follow.

    A rank exits 0 whatever its cases did, so torchrun only reports real failures; a rank that fails
    leaves a fault report for the supervisor (bench.engine.launch) before it goes. A stop signal
    (torchrun passes on what the supervisor got) stops every rank at once; rank 0 saves first.
    """
    from bench.engine.distributed import World, link_bus_bandwidth
    from bench.engine.launch import FAULT_DIR_ENV, write_fault
    from bench.engine.session import run_sweep
    from bench.measure.data import load_dataset

    options = request.options
    supervised = env_path(FAULT_DIR_ENV) is not None  # by bench run --nproc, which holds the folder's claim
    with signals_interrupt():
        world = World.join(options.devices[0])
        try:
            link = link_bus_bandwidth(world)  # every rank, before the sweep: what the link itself does
            if options.devices[0] == "cpu" and options.threads[0] is not None:
                import torch

                torch.set_num_threads(options.threads[0])
            run_id = new_run_id()
            folder = request.out or request.default_folder(run_id)
            restarted = env_int("TORCHELASTIC_RESTART_COUNT", 0) > 0
            dataset = load_dataset(
                request.dataset, request.data_dir, download=request.download and world.leader
            )
            resumed = world.leader and (request.resume or restarted) and (folder / RESULTS_FILE).exists()
            if resumed:
                run = load_run(folder)
            elif world.leader:
                prepare_run_folder(folder, run_id, claim=not supervised)
                facts, check = collect_facts(request)
                run = new_run(request, facts, check, dataset, run_id)
                run.processes = ProcessFacts(
                    world.size, world.nnodes, world.backend, options.threads[0], link
                )
            else:
                run = Run(run_id, utc_now(), {}, dataset.info, options)
            try:
                run_sweep(run, options, dataset, folder, say, world=world, resumed=resumed)
            finally:
                if world.leader:
                    with signals_deferred():
                        _tables_if_possible(run, folder)
            if world.leader and not supervised:  # torchrun started it, not bench run --nproc
                finish_run(request, run, folder)
                release_run_folder(folder)
            return EXIT_OK
        except KeyboardInterrupt:
            raise  # a stop, not a fault: the supervisor finishes the folder
        except BaseException as error:
            write_fault(error, world.rank)
            raise
        finally:
            world.leave()


def _remove_if_empty(folder: Path) -> None:
    release_run_folder(folder)
    try:
        folder.rmdir()
    except OSError:
        pass


# --- bench ab --------------------------------------------------------------------------------------


EXIT_AB_INTERRUPTED = 130  # 128 + SIGINT: what a stopped block exits with (a signal becomes an interrupt)


def default_ab_folder() -> Path:
    return Path("results") / f"ab-{datetime.now():%Y-%m-%d}-{new_run_id()}"


def ab_job(request: ABRequest, argv: Sequence[str], aa: bool = False) -> int:
    """`bench ab`: probes both sides (a side that cannot run is exit 2 before anything is measured), runs
    the blocks, and writes ab.json, ab.md and each side's merged run (a/, b/) into one folder."""
    from bench.analysis.ab import INTERRUPTED, SIDES
    from bench.engine.ab import ABState, current_cpus, merged_run, probe_both, run_ab
    from bench.render.ab import AB_JSON, AB_MD, ab_markdown, block_line, console_table, verdict_lines

    folder = request.folder
    run_id = new_run_id()
    prepare_run_folder(folder, run_id)  # claimed: two `bench ab`s cannot share a folder
    say(f"bench ab: {folder}; probing both sides")
    try:
        probes = probe_both(request.sides, request.shared, folder)
    except BenchError:
        for cache in folder.glob("inductor-cache-*"):  # made by the probes' torch, empty
            _remove_if_empty(cache)
        _remove_if_empty(folder)
        raise
    plans = {name: len(found.cases) for name, found in probes.items()}
    if plans["A"] != plans["B"]:
        raise UsageError(
            f"side A plans {plans['A']} cases and side B {plans['B']}: A/B pairs the same cases, in order",
            hint="give both sides the same workloads, batch sizes and devices (shared options go after --)",
        )
    for side in request.sides:
        found = probes[side.name]
        say(
            f"  {side.name}: torch {found.torch}, torchvision {found.torchvision} ({found.python}); {plans['A']} cases"
        )
    state = ABState(request, probes, current_cpus())
    created = utc_now()

    def record() -> dict[str, Any]:
        return state.record(shlex.join(["bench", *argv]), created, aa)

    def on_block(current: ABState) -> None:
        block = current.blocks[-1]
        say(block_line(block, current.measured_s, request.budget_s))
        if not block.warmup and current.pairs and len([b for b in current.blocks if not b.warmup]) % 2 == 0:
            for line in verdict_lines(current.verdicts):
                say(line)
        write_atomic(folder / AB_JSON, json.dumps(record(), indent=1) + "\n")

    try:
        run_ab(state, on_block)
    finally:
        release_run_folder(folder)
    write_atomic(folder / AB_JSON, json.dumps(record(), indent=1) + "\n")
    write_atomic(folder / AB_MD, ab_markdown(record(), state.verdicts, state.blocks) + "\n")
    for name in SIDES:
        merged = merged_run(folder, state.blocks, name)
        if merged is not None:
            (folder / name.lower()).mkdir(exist_ok=True)
            save_run(merged, folder / name.lower())
            write_tables(merged, folder / name.lower())
    print(console_table(state.verdicts))
    print(f"\nStopped: {state.stopped}. Results: {folder}/ ({AB_MD}, {AB_JSON}, blocks/, a/, b/)")
    return EXIT_AB_INTERRUPTED if state.stopped == INTERRUPTED else EXIT_OK
