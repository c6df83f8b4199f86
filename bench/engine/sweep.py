"""The sweep: every planned item measured one at a time, each result saved before the next begins.

Whatever a case raises, the sweep goes on: an allocation failure becomes status `oom`, anything
else status `error`, and every finished pass is on disk before the next one starts. A case that
failed for good (OOM, error, skipped) is not tried again in later passes; a device left unusable by
a sticky CUDA error fails the cases after it at once. With the ranks torchrun started (`world`),
rank 0 runs the sweep and tells the others, item by item, what to do (`decide`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from bench.core.catalog import STOPPING_STATUSES, Status
from bench.core.errors import WriteFailure, one_line
from bench.core.keys import CaseKey
from bench.core.models import cannot_run
from bench.core.plan import Item, Options, is_retry, schedule
from bench.core.results import CaseResult, Run
from bench.core.store import save_run
from bench.engine.progress import Progress, describe
from bench.engine.validation import LossChecks, item_recorded
from bench.measure import modes
from bench.measure.data import Dataset
from bench.measure.devices import min_round_s
from bench.measure.energy import EnergyMeter, meter_for
from bench.measure.failures import is_out_of_memory, release_memory
from bench.measure.loaders import loader_unsupported
from bench.measure.profiling import profile_case
from bench.measure.records import Measured, case_context, measure_one_process


def needs_retry(case: CaseResult | None, options: Options) -> bool:
    """A measured case with fewer clean passes than planned gets another pass at the end of the sweep."""
    return case is not None and case.ok and len(case.clean_passes) < min(options.passes, len(case.passes))


def profiled(options: Options, item: Item) -> bool:
    """`--profile` takes a case's steps after its last planned pass (never after a retry's)."""
    return options.profile and item.pass_index == options.passes - 1


@dataclass
class Sweep:
    """The state of one run while it executes: the plan, the run record and its folder."""

    run: Run
    folder: Path
    dataset: Dataset
    options: Options
    cases: list[CaseKey]
    progress: Progress | None = None
    world: Any = None  # bench.engine.distributed.World when the ranks torchrun started run this sweep
    clock_overhead_s: dict[str, float] = field(default_factory=dict)
    meters: dict[str, EnergyMeter] = field(default_factory=dict)
    broken_devices: dict[str, str] = field(default_factory=dict)
    stop_requested: bool = False
    fatal: BaseException | None = None  # a WriteFailure that ended the run (bench.engine.pytest_driver)

    def __post_init__(self) -> None:
        self.progress = self.progress or Progress(self.items, self.options.passes)
        self.loss_checks = LossChecks(self.dataset, self.progress.note)

    @cached_property
    def items(self) -> list[Item]:
        return schedule(self.cases, self.options)

    def min_round_s(self, device: str) -> float:
        return min_round_s(self.clock_overhead_s.get(device, 0.0))

    def meter(self, device: str) -> EnergyMeter:
        if device not in self.meters:
            self.meters[device] = meter_for(device)
        return self.meters[device]

    def decide(self, item: Item) -> str:
        """What to do with an item: `done` (measured before a resume), `stopped` (its case failed for good),
        `skip` (its model cannot run its workload), `parallel` (every rank measures it together) or
        `solo` (one process)."""
        earlier = self.run.case(item.key)
        if earlier is not None and item_recorded(earlier, item):
            return "done"
        if is_retry(item, self.options) and not needs_retry(earlier, self.options):
            return "done"  # its passes got their CPUs: the slot is not needed
        if earlier is not None and earlier.status in STOPPING_STATUSES:
            return "stopped"
        if cannot_run(item.key.model, item.key.workload):
            return "skip"
        return "parallel" if item.key.processes > 1 else "solo"

    def measure(self, item: Item, benchmark: Any | None) -> CaseResult | None:
        """Measures one case in one pass and records it; never raises for what happens inside a case of
        one process. (A case across processes that fails breaks the worker group: it raises, and the
        supervisor records it; see bench.engine.launch.)"""
        assert self.progress is not None
        key = item.key
        self.progress.done += 1
        decision = self.decide(item)
        if self.world is not None:
            self.world.decide(decision)
        if decision == "done":
            return self.run.case(key)
        self.progress.starting(item)
        earlier = self.run.case(key)
        if decision == "stopped" and earlier is not None:  # an OOM will not fit next pass either
            self.progress.note(f"skipped: {str(earlier.status).upper()} in an earlier pass")
            return earlier
        reason = cannot_run(key.model, key.workload)
        if decision == "skip" and reason:
            self.record_failure(key, Status.SKIPPED, reason)
            self.progress.note(f"skipped: {reason}")
            return self.run.case(key)
        start = time.perf_counter()
        self.run.in_progress = key
        self.save()  # if this process dies now, the file says where
        try:
            if decision == "parallel":
                self._measure_parallel(item)
            else:
                self._measure_one_process(item, benchmark)
        finally:
            if self.world is not None and decision == "solo":
                self.world.barrier()  # the other ranks waited for this one-process case
        self.run.in_progress = None
        self.progress.finished.append((item, time.perf_counter() - start))
        if decision == "solo" and profiled(self.options, item):
            self.profile(key)
        elif decision == "parallel" and profiled(self.options, item):
            self.profile_together(key)
        broken = release_memory(key.device)  # after the record: a failing clean-up cannot cost the case
        if broken:
            self.broken_devices[key.device] = broken
        result = self.run.case(key)
        assert result is not None
        self.save()
        self.progress.note(describe(result))
        return result

    def _measure_one_process(self, item: Item, benchmark: Any | None) -> None:
        key = item.key
        first = self.run.case(key) is None
        unsupported = modes.unsupported(key.mode, key.device) if first else None
        if key.device in self.broken_devices:
            reason = f"not run: {key.device} is unusable after an earlier error ({self.broken_devices[key.device]})"
            self.record_failure(key, Status.ERROR, reason)
            return
        if unsupported:
            self.record_failure(key, Status.SKIPPED, f"{key.mode} on {key.device}: {unsupported}")
            return
        loader_reason = (loader_unsupported(key) or self.larger_than_the_data(key)) if first else None
        if loader_reason:
            self.record_failure(key, Status.SKIPPED, loader_reason)
            return
        try:
            with case_context(key):
                measured = measure_one_process(
                    item, self.dataset, self.options.epochs, self.meter(key.device), benchmark, first
                )
                self.keep(key, measured)
            # after the first pass, which paid the compile or capture and recorded it; outside the case's
            # context, so that eager's reference runs in plain float32 whatever the mode (TF32) changes
            check = self.loss_checks.of(key) if first else None
            case = self.run.case(key)
            if check is not None and case is not None and case.status in (Status.OK, Status.INVALID):
                self.store(case.with_validation(check))
        except WriteFailure:
            raise  # the folder, not the case: the run stops at the first write it refuses
        except Exception as error:
            self.record_failure(key, Status.OOM if is_out_of_memory(error) else Status.ERROR, one_line(error))

    def profile(self, key: CaseKey) -> None:
        """After the case's last planned pass (untimed): its steps under the profiler. A profiler that
        fails costs a note, never the case."""
        case = self.run.case(key)
        if case is None or not case.ok:
            return
        try:
            with case_context(key):
                paths = profile_case(key, self.dataset, self.folder)
        except Exception as error:
            assert self.progress is not None
            self.progress.note(f"profile not taken: {one_line(error)}")
            return
        self.store(replace(case, profiles=paths))

    def profile_together(self, key: CaseKey) -> None:
        """A case across processes: every rank profiles its steps at once (the others in `follow`)."""
        from bench.engine.distributed import profile_together

        assert self.world is not None and self.progress is not None
        try:
            with case_context(key):
                paths = profile_together(self.world, self.dataset, key, self.folder)
        except Exception as error:
            self.progress.note(f"profile not taken: {one_line(error)}")
            return
        case = self.run.case(key)
        if case is not None and paths:
            self.store(replace(case, profiles=paths))

    def larger_than_the_data(self, key: CaseKey) -> str | None:
        """An epoch or training run at a batch larger than the training set would be one batch of the
        whole set: labelled with a size that never ran. (Steps on a fixed batch repeat samples: fine.)"""
        samples = len(self.dataset.train_labels)
        if key.loader is None or key.batch_size <= samples:
            return None
        return f"batch {key.batch_size} is larger than the training set ({samples:,} images): an epoch would be one batch of {samples:,}"

    def _measure_parallel(self, item: Item) -> None:
        """Every rank measures the item together; rank 0 (this process) keeps what they measured."""
        from bench.engine.distributed import ParallelMeasure

        assert self.world is not None, "a case across processes needs the ranks torchrun starts"
        with case_context(item.key):  # as the other ranks run it (follow)
            together = ParallelMeasure(
                self.world, self.dataset, self.options, self.min_round_s(item.key.device)
            ).measure(item)
        assert together is not None
        measured, facts = together
        measured.facts = facts
        self.keep(item.key, measured)

    def keep(self, key: CaseKey, measured: Measured) -> None:
        """Adds what one item measured to its case and saves the run at once."""
        case, records = self.run.case(key), list(measured.records)
        if case is None:
            first, *records = records
            case = CaseResult(
                key, samples_per_unit=measured.samples_per_unit, passes=[first], **measured.facts
            )
        for record in records:
            case = case.with_pass(record)
        self.store(case)

    def record_failure(self, key: CaseKey, status: Status, error: str) -> None:
        """A failed pass: the case's status if it is its first, a note on the case if passes succeeded."""
        earlier = self.run.case(key)
        if earlier is not None and earlier.ok:
            self.store(earlier.with_failed_pass(status, error))
        else:
            self.store(CaseResult.failure(key, status, error))

    def store(self, case: CaseResult) -> None:
        self.run.store(case)
        self.save()

    def save(self) -> None:
        save_run(self.run, self.folder)
