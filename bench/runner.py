"""A run: plan the cases, measure them one at a time, save each pass as it finishes, render the tables.

The cases execute as one pytest session (`bench/sweep_pytest.py`, one test item per case and pass)
so that the workloads timed in rounds are timed by pytest-benchmark itself: its calibration,
statistics and JSON, with a timer that waits for the device (`devices.device_clock`) and rounds long
enough that the timer's own cost stays below 1% of them. Epochs and training runs time themselves.
How each workload is measured comes from the workload table (`catalog.WORKLOAD_TABLE`): one
measuring function per kind of timing, none per workload.

Whatever a case raises, the sweep goes on: an allocation failure becomes status `oom`, anything
else status `error`, and every finished pass is on disk before the next one starts. The first
Ctrl-C stops after the current case; a second one aborts it.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from bench import env as envmod
from bench import modes
from bench import results as resultsmod
from bench.catalog import EPOCHS, GC_POLICY, ROUNDS, RUNS, workload
from bench.data import Dataset, fixed_batch
from bench.devices import clock_overhead, min_round_s, prepare_device, synchronize
from bench.efficiency import best_of, count_ops, flops_per_sample, measure_peaks, precisions_for
from bench.energy import EnergyMeter, meter_for
from bench.errors import one_line
from bench.memory import MemoryMonitor
from bench.plan import CaseKey, Item, Options, peak_key, plan, schedule, solo_device
from bench.results import CaseResult, EnergyRecord, PassRecord, Run, Validation
from bench.workloads import make_step, run_epochs, run_training

STOPPING_STATUSES = ("oom", "error", "skipped")  # a case in one of these is not tried again
ACCURACY_TOLERANCE = 0.01  # a mode's final test accuracy within 1 point of eager's


@contextmanager
def case_context(key: CaseKey) -> Iterator[None]:
    """What a case runs under: its intra-op thread count (CPU) and its mode's context (TF32 flags)."""
    previous = torch.get_num_threads()
    if key.threads is not None:
        torch.set_num_threads(key.threads)
    try:
        with modes.mode(key.mode).context():
            yield
    finally:
        torch.set_num_threads(previous)


def graphs_into(counts: list[int]) -> Callable[[], None]:
    """A hook that notes how many graphs torch.compile has built so far (a recompile shows as a rise)."""
    return lambda: counts.append(modes.compiled_graphs())


def energy_record(meter: EnergyMeter, joules: list[float | None], seconds: float) -> EnergyRecord | None:
    """The pass's energy, when every timed stretch of it was counted."""
    if not joules or any(j is None for j in joules) or seconds <= 0 or meter.source is None:
        return None
    return EnergyRecord(sum(j for j in joules if j is not None), seconds, meter.source)


OOM_ERRORS = (torch.cuda.OutOfMemoryError, MemoryError)  # torch.OutOfMemoryError is the same class
OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",  # the CPU allocator
    "Cannot allocate memory",
    "CUBLAS_STATUS_ALLOC_FAILED",  # cuBLAS creating its workspace on a full GPU
)


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA OOM, a CPU allocation failure, or Python's MemoryError."""
    if isinstance(error, OOM_ERRORS):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in OOM_MARKERS)


def item_recorded(case: CaseResult, item: Item) -> bool:
    """Whether `case` already holds what `item` measures (a resumed run skips it)."""
    if workload(case.workload).timing == RUNS:
        return all(
            any(r.index == i for r in case.passes) for i in range(item.first, item.first + item.repeats)
        )
    return any(r.index == item.pass_index for r in case.passes)


def release_memory(device: str) -> str | None:
    """Frees what a finished (or failed) case left behind; returns why the device is unusable, if it is.

    A CUDA error such as an illegal memory access is sticky: every later call on that device fails.
    """
    gc.collect()
    if not device.startswith("cuda"):
        return None
    try:
        synchronize(device)
        torch.cuda.empty_cache()
    except RuntimeError as error:
        return one_line(error, 300)
    return None


def format_duration(seconds: float) -> str:
    """`0:42`, `12:05`, `1:02:03`."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def estimate_remaining(finished: list[tuple[Item, float]], remaining: list[Item]) -> float | None:
    """Seconds the remaining items should take, judged by the items already measured.

    Each remaining item is priced by what the same case cost in earlier passes, else by what its
    workload cost so far, else by the average item; epochs and runs count per repeat. None until
    something has finished.
    """
    if not finished:
        return None

    def units(item: Item) -> int:
        return max(item.repeats, 1)

    by_key: dict[CaseKey, list[float]] = {}
    by_workload: dict[str, list[float]] = {}
    for item, seconds in finished:
        by_key.setdefault(item.key, []).append(seconds / units(item))
        by_workload.setdefault(item.key.workload, []).append(seconds / units(item))
    average = sum(seconds for _, seconds in finished) / len(finished)
    total = 0.0
    for item in remaining:
        known = by_key.get(item.key) or by_workload.get(item.key.workload)
        total += sum(known) / len(known) * units(item) if known else average
    return total


@dataclass
class Sweep:
    """The state of one run while it executes: the plan, the run record and its folder."""

    run: Run
    folder: Path
    dataset: Dataset
    options: Options
    cases: list[CaseKey]
    progress: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))
    stop_requested: bool = False
    done: int = 0
    broken_devices: dict[str, str] = field(default_factory=dict)
    clock_overhead_s: dict[str, float] = field(default_factory=dict)
    meters: dict[str, EnergyMeter] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    finished: list[tuple[Item, float]] = field(default_factory=list)
    loss_checks: dict[tuple[str, str, int], Validation] = field(default_factory=dict)
    world: Any = None  # bench.distributed.World when the ranks torchrun started run this sweep together

    @cached_property
    def items(self) -> list[Item]:
        return schedule(self.cases, self.options)

    def min_round_s(self, device: str) -> float:
        return min_round_s(self.clock_overhead_s.get(device, 0.0))

    def decide(self, item: Item) -> str:
        """What to do with an item: `done` (measured before a resume), `stopped` (its case failed for good),
        `parallel` (every rank measures it together) or `solo` (one process)."""
        earlier = self.run.case(item.key)
        if earlier is not None and item_recorded(earlier, item):
            return "done"
        if earlier is not None and earlier.status in STOPPING_STATUSES:
            return "stopped"
        return "parallel" if item.key.world_size > 1 or item.key.side_by_side > 1 else "solo"

    def measure(self, item: Item, benchmark: Any | None) -> CaseResult | None:
        """Measures one case in one pass and records it; never raises for what happens inside a case
        of one process. (A case across processes that fails breaks the worker group: it raises, and the
        supervisor records it; see bench.launch.)"""
        key = item.key
        self.done += 1
        decision = self.decide(item)
        if self.world is not None:
            self.world.decide(decision)
        if decision == "done":
            return self.run.case(key)
        self.progress(self.progress_line(item))
        if decision == "stopped":  # an OOM will not fit next pass either
            earlier = self.run.case(key)
            assert earlier is not None
            self.progress(f"        skipped: {earlier.status.upper()} in an earlier pass")
            return earlier
        start = time.perf_counter()
        self.run.in_progress = key
        resultsmod.save_run(self.run, self.folder)  # if this process dies now, the file says where
        try:
            if decision == "parallel":
                self.measure_parallel(item)
            else:
                self.measure_one_process(item, benchmark)
        finally:
            if self.world is not None and decision == "solo":
                self.world.barrier()  # the other ranks waited for this one-process case
        self.run.in_progress = None
        self.finished.append((item, time.perf_counter() - start))
        broken = release_memory(key.device)  # after the record: a failing clean-up cannot cost the case
        if broken:
            self.broken_devices[key.device] = broken
        result = self.run.case(key)
        assert result is not None
        resultsmod.save_run(self.run, self.folder)
        self.progress(f"        {describe(result)}")
        return result

    def measure_one_process(self, item: Item, benchmark: Any | None) -> None:
        key = item.key
        earlier = self.run.case(key)
        unsupported = modes.unsupported(key.mode, key.device) if earlier is None else None
        if key.device in self.broken_devices:
            reason = f"not run: {key.device} is unusable after an earlier error ({self.broken_devices[key.device]})"
            self.record_failure(key, "error", reason)
        elif unsupported:
            self.record_failure(key, "skipped", f"{key.mode} on {key.device}: {unsupported}")
        else:
            try:
                with case_context(key):
                    MEASURE[workload(key.workload).timing](self, item, benchmark)
                    # after the first pass, which paid the compile or capture and recorded it
                    check = self.loss_check(key) if earlier is None else None
                case = self.run.case(key)
                if check is not None and case is not None and case.status in ("ok", "invalid"):
                    self._store(case.with_validation(check))
            except Exception as error:
                self.record_failure(key, "oom" if is_out_of_memory(error) else "error", one_line(error))

    def measure_parallel(self, item: Item) -> None:
        """Every rank measures the item together; rank 0 (this process) keeps what they measured."""
        from bench.distributed import ParallelMeasure

        assert self.world is not None, "a case across processes needs the ranks torchrun starts"
        key = item.key
        with case_context(key):  # as the other ranks run it (follow)
            measured = ParallelMeasure(
                self.world, self.dataset, self.options, self.min_round_s(key.device)
            ).measure(item)
        assert measured is not None
        records, samples_per_unit, facts = measured
        for record in records:
            self.keep(key, record, samples_per_unit, **(facts if self.run.case(key) is None else {}))

    def progress_line(self, item: Item) -> str:
        passes = f" (pass {item.pass_index + 1}/{self.options.passes})" if self.options.passes > 1 else ""
        elapsed = format_duration(time.perf_counter() - self.started)
        left = estimate_remaining(self.finished, self.items[self.done - 1 :])
        timing = f"{elapsed} elapsed" + (f", about {format_duration(left)} left" if left is not None else "")
        return f"[{self.done:>3}/{len(self.items)}] {timing} · {item.key.label()}{passes} ..."

    def loss_check(self, key: CaseKey) -> Validation | None:
        """A mode's validation against eager at this device and batch size, done once (None for eager)."""
        if key.mode == "eager":
            return None
        cached = (key.device, key.mode, key.batch_size)
        if cached not in self.loss_checks:
            self.progress(f"        validating {key.mode} against eager ({modes.VALIDATION_STEPS} steps) ...")
            check = modes.validate_loss(key.mode, key.device, self.dataset, key.batch_size)
            self.loss_checks[cached] = Validation(
                "loss", check.loss, check.eager_loss, check.tolerance, check.passed, check.steps
            )
        return self.loss_checks[cached]

    def step_facts(
        self, key: CaseKey, training: Any, call: Callable[[], Any] | None = None
    ) -> dict[str, int]:
        """FLOPs per sample and ATen ops per call of this case's model and mode (counted untimed): the ops of
        `call` (the timed callable of a round), or else of one training step on a fixed batch."""
        if call is None:
            inputs, labels = fixed_batch(self.dataset, key.batch_size, key.device)
            call = lambda: training.step(inputs, labels)  # noqa: E731
        return {
            "flops_per_sample": flops_per_sample(training.net, workload(key.workload).backward),
            "ops_per_step": count_ops(call),
        }

    def keep(self, key: CaseKey, record: PassRecord, samples_per_unit: int, **facts: Any) -> None:
        """Adds one measured pass to its case and saves the run at once."""
        earlier = self.run.case(key)
        if earlier is None:
            self._store(CaseResult.for_key(key, samples_per_unit=samples_per_unit, passes=[record], **facts))
        else:
            self._store(earlier.with_pass(record))

    def record_failure(self, key: CaseKey, status: str, error: str) -> None:
        """A failed pass: the case's status if it is its first, a note on the case if passes succeeded."""
        earlier = self.run.case(key)
        if earlier is not None and earlier.ok:
            self._store(earlier.with_failed_pass(status, error))
        else:
            self._store(CaseResult.failure(key, status, error))  # type: ignore[arg-type]

    def _store(self, case: CaseResult) -> None:
        for index, earlier in enumerate(self.run.cases):
            if earlier.key == case.key:
                self.run.cases[index] = case
                break
        else:
            self.run.cases.append(case)
        resultsmod.save_run(self.run, self.folder)

    # --- one measuring function per kind of timing ---

    def measure_rounds(self, item: Item, benchmark: Any | None) -> None:
        key = item.key
        if benchmark is None:
            raise RuntimeError(
                "workloads timed in rounds are timed by pytest-benchmark; no fixture was given"
            )
        monitor, meter = MemoryMonitor(key.device), self.meters.get(key.device) or meter_for(key.device)
        with monitor:
            training = modes.build(key.mode, key.device)
            step = make_step(key.workload, self.dataset, key.device, key.batch_size, training)
            graphs = modes.compiled_graphs() if key.mode == "compile" else None
            gc.collect()  # pytest-benchmark keeps the collector off during the rounds (disable_gc)
            joules_before, start = meter.read(), time.perf_counter()
            benchmark(step)
            synchronize(key.device)
            window, joules = time.perf_counter() - start, meter.joules_between(joules_before, meter.read())
            recompiles = modes.compiled_graphs() - graphs if graphs is not None else None
        stats = benchmark.stats
        record = PassRecord(
            index=item.pass_index,
            samples_s=list(stats.stats.data),
            calls_per_round=stats.iterations,
            timer=getattr(stats.options.get("timer"), "name", None) or str(stats.options.get("timer")),
            min_round_s=stats.options.get("min_time"),
            compile_s=training.compile_s or None,
            recompiles=recompiles,
            memory=monitor.reading,
            energy=energy_record(meter, [joules], window),
        )
        facts = self.step_facts(key, training, step) if item.pass_index == 0 else {}
        self.keep(key, record, key.batch_size, **facts)

    def measure_epochs(self, item: Item, benchmark: Any | None) -> None:
        key = item.key
        monitor, meter = MemoryMonitor(key.device), self.meters.get(key.device) or meter_for(key.device)
        start = time.perf_counter()
        graphs: list[int] = []
        with monitor:
            training = modes.build(key.mode, key.device)
            timings = run_epochs(
                self.dataset, key.device, key.batch_size, key.loader or "", item.repeats,
                seed=item.pass_index, after_epoch=monitor.sample, training=training, meter=meter,
                after_warm_up=graphs_into(graphs),
            )  # fmt: skip
            recompiles = modes.compiled_graphs() - graphs[0] if key.mode == "compile" and graphs else None
        record = PassRecord(
            index=item.pass_index,
            samples_s=[t.seconds for t in timings],
            data_seconds=[t.data_seconds for t in timings],
            data_timer=timings[0].data_timer,
            batches=timings[0].batches,
            compile_s=training.compile_s or None,
            recompiles=recompiles,
            memory=monitor.reading,
            energy=energy_record(meter, [t.energy_j for t in timings], sum(t.seconds for t in timings)),
            wall_s=round(time.perf_counter() - start, 3),
        )
        facts = self.step_facts(key, training) if item.pass_index == 0 else {}
        self.keep(key, record, timings[0].samples, **facts)

    def measure_runs(self, item: Item, benchmark: Any | None) -> None:
        key = item.key
        meter = self.meters.get(key.device) or meter_for(key.device)
        for run_index in range(item.first, item.first + item.repeats):
            monitor = MemoryMonitor(key.device)
            start = time.perf_counter()
            graphs: list[int] = []
            with monitor:
                training = run_training(
                    self.dataset, key.device, key.batch_size, self.options.epochs, key.loader or "",
                    seed=run_index, after_epoch=monitor.sample, meter=meter,
                    build=lambda device, seed: modes.build(key.mode, device, seed),
                    after_warm_up=graphs_into(graphs),
                )  # fmt: skip
                recompiles = modes.compiled_graphs() - graphs[0] if key.mode == "compile" and graphs else None
            record = PassRecord(
                index=run_index,
                seed=training.seed,
                samples_s=training.epoch_seconds,
                data_seconds=training.data_seconds,
                data_timer=training.data_timer,
                test_accuracy=training.test_accuracies,
                mean_loss=[*training.mean_losses],
                eval_seconds=training.eval_seconds,
                compile_s=training.compile_s or None,
                recompiles=recompiles,
                memory=monitor.reading,
                energy=energy_record(meter, training.energy_j, sum(training.epoch_seconds)),
                wall_s=round(time.perf_counter() - start, 3),
            )
            facts = {}
            if self.run.case(key) is None:
                facts = self.step_facts(key, modes.build(key.mode, key.device))
            self.keep(key, record, training.samples_per_epoch, **facts)


MEASURE: dict[str, Callable[[Sweep, Item, Any], None]] = {
    ROUNDS: Sweep.measure_rounds,
    EPOCHS: Sweep.measure_epochs,
    RUNS: Sweep.measure_runs,
}


def describe(result: CaseResult) -> str:
    """The progress line for a finished case."""
    if not result.ok:
        return f"{result.status.upper()}: {result.error}"
    spread = f"spread {result.spread:.1%}" if result.spread is not None else "spread n/a"
    noisy = " NOISY" if result.noisy else ""
    accuracy = f", test accuracy {result.final_accuracy:.1%}" if result.final_accuracy is not None else ""
    rate = result.samples_per_s or 0.0
    return f"{rate:,.0f} samples/s, median {result.median_s:.4g} s ({spread}{noisy}, n={result.n}){accuracy}"


@contextmanager
def stop_after_current_case(sweep: Sweep) -> Iterator[None]:
    """First Ctrl-C: finish the case in progress, then stop. Second Ctrl-C: stop now."""
    if threading.current_thread() is not threading.main_thread():  # signals can only be set there
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if sweep.stop_requested:
            raise KeyboardInterrupt
        sweep.stop_requested = True
        sweep.progress("Ctrl-C: stopping after the current case (press Ctrl-C again to abort it now)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def execute(sweep: Sweep) -> str:
    """Runs every planned item through pytest; returns the run's final state."""
    import pytest

    from bench import sweep_pytest

    plugin = sweep_pytest.SweepPlugin(sweep)
    with tempfile.TemporaryDirectory(prefix="bench-pytest-") as config_dir:
        ini = Path(config_dir) / "pytest.ini"
        ini.write_text("[pytest]\n")  # the sweep must not pick up the caller's pytest configuration
        args = [
            sweep_pytest.__file__,
            "-c", str(ini),
            "--rootdir", config_dir,
            "-p", "no:cacheprovider",
            "-p", "no:terminal",
            "-p", "pytest_benchmark.plugin",
            "--capture=no",
            "-W", "ignore::pytest.PytestUnraisableExceptionWarning",
            "--benchmark-disable-gc",
            "--benchmark-max-time", str(sweep.options.max_time / sweep.options.passes),
            "--benchmark-min-rounds", str(sweep.options.min_rounds),
            "--benchmark-json", str(sweep.folder / resultsmod.PYTEST_BENCHMARK_FILE),
            "--benchmark-quiet",
        ]  # fmt: skip
        previous_autoload = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugins named above
        try:
            with stop_after_current_case(sweep):
                exit_code = pytest.main(args, plugins=[plugin])
        finally:
            if previous_autoload is None:
                os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
            else:
                os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = previous_autoload
    if plugin.internal_error:
        raise RuntimeError(f"the benchmark session failed: {plugin.internal_error}")
    if exit_code in (
        pytest.ExitCode.INTERNAL_ERROR,
        pytest.ExitCode.USAGE_ERROR,
        pytest.ExitCode.NO_TESTS_COLLECTED,
    ):
        raise RuntimeError(
            f"the benchmark session failed to start (pytest exit status {int(exit_code)}); see above"
        )
    finished = sweep.done >= len(sweep.items)
    if finished and exit_code in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return "complete"
    return "interrupted"


def follow(sweep: Sweep) -> None:
    """A rank other than 0: takes rank 0's decision for every item, and joins the items across processes."""
    from bench.distributed import ParallelMeasure, wait_for_leader

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


def prepare_devices(
    options: Options, cases: list[CaseKey]
) -> tuple[dict[str, float], dict[str, dict[str, Any]], dict[str, EnergyMeter]]:
    """Per device the cases use, before any: start-up paid, the clock's own cost, the measured peaks
    (on the CPU at every thread count the cases use), the energy meter."""
    overheads: dict[str, float] = {}
    peaks: dict[str, dict[str, Any]] = {}
    meters: dict[str, EnergyMeter] = {}
    for device, threads in dict.fromkeys((key.device, key.threads) for key in cases):
        if device not in overheads:
            prepare_device(device)
            overheads[device] = clock_overhead(device)
            meters[device] = meter_for(device)
        with case_context(CaseKey("forward", device, 1, threads=threads)):
            peaks[peak_key(device, threads)] = measure_peaks(device, precisions_for(device, options.modes))
    return overheads, peaks, meters


def remeasure_peaks(run: Run, cases: list[CaseKey], options: Options) -> None:
    """The limits measured again at the end of the run, each device keeping its best of the two."""
    peaks = run.env.get("peaks")
    if not isinstance(peaks, dict):
        return
    for device, threads in dict.fromkeys((key.device, key.threads) for key in cases):
        where = peak_key(device, threads)
        if device in run.env.get("timing", {}).get("clock_overhead_s", {}) and where in peaks:
            with case_context(CaseKey("forward", device, 1, threads=threads)):
                again = measure_peaks(device, precisions_for(device, options.modes))
            peaks[where] = best_of(peaks[where], again)


def validate_training(run: Run) -> None:
    """Training that runs differently must end within 1 point of the plain run's final accuracy, same epochs:
    a mode against eager at the same batch size; N data-parallel ranks at batch B against one process at
    batch N·B (DDP averages the gradients of N·B samples, with the chapter's learning rate unscaled)."""
    cases = {case.key: case for case in run.cases}
    for index, case in enumerate(run.cases):
        plain = case.mode == "eager" and case.world_size == 1
        if workload(case.workload).timing != RUNS or plain or case.status not in ("ok", "invalid"):
            continue
        if case.world_size > 1:  # N ranks at batch B take the step of one process at batch N·B
            reference = replace(
                case.key,
                device=solo_device(case.device),
                batch_size=case.batch_size * case.world_size,
                world_size=1,
            )
        else:
            reference = replace(case.key, mode="eager")
        eager = cases.get(reference)
        if eager is None or eager.final_accuracy is None or case.final_accuracy is None:
            continue
        passed = abs(case.final_accuracy - eager.final_accuracy) <= ACCURACY_TOLERANCE
        against = f"one process at batch {reference.batch_size}" if case.world_size > 1 else "eager"
        check = Validation(
            "accuracy", case.final_accuracy, eager.final_accuracy, ACCURACY_TOLERANCE, passed, against=against
        )
        run.cases[index] = case.with_validation(check)


def run_benchmarks(
    options: Options,
    dataset: Dataset,
    folder: Path,
    env: dict[str, Any],
    run_id: str,
    progress: Callable[[str], None] | None = None,
    world: Any = None,
    resume: Run | None = None,
) -> tuple[Run, Path]:
    """Measures every planned case into `folder` (already checked writable) and writes the tables.

    With `world` (the ranks torchrun started), every rank calls this: rank 0 runs the sweep and alone
    writes the folder, the others follow it. With `resume`, the items that run holds are skipped.
    """
    from bench.report import write_tables

    cases = plan(options)
    run = resume or Run(
        run_id=run_id,
        created=resultsmod.utc_now(),
        env=env,
        dataset=dataset.info,
        options=options,
        planned_cases=len(cases),
    )
    leader = world is None or world.leader
    meters: dict[str, EnergyMeter] = {}
    if leader and resume is None:
        overheads, peaks, meters = prepare_devices(options, cases)
        run.env["timing"] = {
            "gc": GC_POLICY,
            "clock_overhead_s": overheads,
            "min_round_s": {device: min_round_s(overhead) for device, overhead in overheads.items()},
        }
        run.env["peaks"] = peaks
        run.env["energy"] = {device: meter.facts() for device, meter in meters.items()}
    if world is not None:
        from bench.distributed import wait_for_leader

        wait_for_leader(world)  # rank 0 collected the facts and measured the peaks meanwhile
        run.env = world.decide(run.env if leader else None)  # every rank times rounds alike
    timing = run.env.get("timing", {})
    sweep = Sweep(
        run=run, folder=folder, dataset=dataset, options=options, cases=cases,
        clock_overhead_s=dict(timing.get("clock_overhead_s", {})), world=world,
    )  # fmt: skip
    if progress is not None:
        sweep.progress = progress
    if not leader:
        follow(sweep)
        return run, folder
    sweep.meters = meters or {
        device: meter_for(device) for device in dict.fromkeys(key.device for key in cases)
    }
    run.state = "running"
    resultsmod.save_run(run, folder)
    cpu_before = envmod.cpu_time_split()
    try:
        run.state = execute(sweep)  # type: ignore[assignment]
        validate_training(run)
        remeasure_peaks(run, cases, options)
    except BaseException:
        run.state = "interrupted"
        raise
    finally:
        run.env["during_run"] = envmod.disturbance_between(cpu_before, envmod.cpu_time_split())
        run.finished = resultsmod.utc_now()
        resultsmod.save_run(run, folder)
        write_tables(run, folder)
    return run, folder
