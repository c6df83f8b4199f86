"""A whole sweep: the devices prepared and their limits measured, every item measured, the training
checked against its references, the limits measured again at the end.

With `world` (the ranks torchrun started), every rank calls `run_sweep`: rank 0 runs the sweep and
alone writes the folder, the others follow it item by item. Writing the tables is the caller's
(bench.app): the engine never renders.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.core.catalog import GC_POLICY
from bench.core.errors import WriteFailure
from bench.core.keys import CaseKey
from bench.core.plan import Options, peak_key, plan
from bench.core.results import Disturbance, Peaks, Run, TimingPolicy
from bench.core.stopping import interrupt_of, requested, signal_name
from bench.core.store import save_run, utc_now
from bench.engine.progress import Say
from bench.engine.sweep import Sweep, profiled
from bench.engine.validation import validate_training
from bench.env.contention import cpu_time_split, disturbance_between
from bench.measure.data import Dataset
from bench.measure.devices import clock_overhead, min_round_s, prepare_device
from bench.measure.efficiency import measure_peaks, precisions_for
from bench.measure.energy import EnergyMeter, meter_for
from bench.measure.records import case_context


def _device_threads(cases: list[CaseKey]) -> list[tuple[str, int | None]]:
    return list(dict.fromkeys((key.device, key.threads) for key in cases))


def _peaks(device: str, threads: int | None, options: Options) -> Peaks:
    with case_context(CaseKey("forward", device, 1, threads=threads)):
        return measure_peaks(device, precisions_for(device, options.modes))


def prepare_devices(run: Run, options: Options, cases: list[CaseKey]) -> dict[str, EnergyMeter]:
    """Per device the cases use, before any: start-up paid, the clock's own cost, the measured peaks
    (on the CPU at every thread count the cases use), the energy meter; recorded in the run."""
    overheads: dict[str, float] = {}
    meters: dict[str, EnergyMeter] = {}
    for device, threads in _device_threads(cases):
        if device not in overheads:
            prepare_device(device)
            overheads[device] = clock_overhead(device)
            meters[device] = meter_for(device)
        run.peaks[peak_key(device, threads)] = _peaks(device, threads, options)
    run.timing = TimingPolicy(
        gc=GC_POLICY,
        clock_overhead_s=overheads,
        min_round_s={device: min_round_s(overhead) for device, overhead in overheads.items()},
    )
    run.meters = {device: meter.facts() for device, meter in meters.items()}
    return meters


def remeasure_peaks(run: Run, options: Options, cases: list[CaseKey]) -> None:
    """The limits measured again at the end of the run, each device keeping its best of the two."""
    for device, threads in _device_threads(cases):
        where = peak_key(device, threads)
        if where in run.peaks:
            run.peaks[where] = run.peaks[where].best_of(_peaks(device, threads, options))


def follow(sweep: Sweep) -> None:
    """A rank other than 0: takes rank 0's decision for every item, and joins the items across processes."""
    from bench.engine.distributed import ParallelMeasure, profile_together, wait_for_leader

    world = sweep.world
    for item in sweep.items:
        decision = world.decide()
        if decision == "solo":
            wait_for_leader(world)
        elif decision == "parallel":
            with case_context(item.key):
                ParallelMeasure(
                    world, sweep.dataset, sweep.options, sweep.min_round_s(item.key.device)
                ).measure(item)
            if profiled(sweep.options, item):
                try:
                    with case_context(item.key):
                        profile_together(world, sweep.dataset, item.key, sweep.folder)
                except Exception:  # rank 0 meets the same failure and notes it
                    continue


@contextmanager
def disturbance_recorded(run: Run, folder: Path, ranks: bool = False) -> Iterator[None]:
    """Whatever happens inside, the run ends with how it ended, its disturbance and end time saved
    (unless the folder refuses the write that would say so: the last good save stands)."""
    before = cpu_time_split()
    refused = False
    try:
        yield
    except KeyboardInterrupt as error:
        run.interrupted_by(interrupt_of(error).name, keep_suspect=ranks)
        raise
    except WriteFailure:
        run.state, refused = "failed", True
        raise
    except BaseException:
        run.state = "failed"
        raise
    finally:
        during = disturbance_between(before, cpu_time_split())
        run.during_run = Disturbance(during.get("steal_percent"), during.get("loadavg_end"))
        run.finished = utc_now()
        try:
            save_run(run, folder)
        except WriteFailure:
            if not refused:
                raise


def run_sweep(
    run: Run,
    options: Options,
    dataset: Dataset,
    folder: Path,
    say: Say | None = None,
    world: Any = None,
    resumed: bool = False,
) -> Run:
    """Measures every planned case of `run` into `folder` (already checked writable)."""
    from bench.engine.pytest_driver import execute

    cases = plan(options)
    leader = world is None or world.leader
    meters: dict[str, EnergyMeter] = {}
    if leader and not resumed:
        meters = prepare_devices(run, options, cases)
    if world is not None:
        from bench.engine.distributed import wait_for_leader

        wait_for_leader(world)  # rank 0 collected the facts and measured the peaks meanwhile
        run.timing = world.decide(run.timing if leader else None)  # every rank times rounds alike
    sweep = Sweep(run=run, folder=folder, dataset=dataset, options=options, cases=cases, world=world)
    sweep.clock_overhead_s = dict(run.timing.clock_overhead_s) if run.timing else {}
    sweep.meters = meters
    if say is not None and sweep.progress is not None:
        sweep.progress.say = say
    if not leader:
        follow(sweep)
        return run
    run.state = "running"
    save_run(run, folder)
    with disturbance_recorded(run, folder, ranks=world is not None):
        run.state = execute(sweep)  # type: ignore[assignment]
        validate_training(run)
        if run.state == "interrupted":  # on a signal: no second measurement of the limits, stop now
            run.interrupted_by(signal_name(requested() or signal.SIGINT), keep_suspect=world is not None)
            return run
        remeasure_peaks(run, options, cases)
    return run
