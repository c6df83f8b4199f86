"""A run: plan the cases, measure them one at a time, save each as it finishes, render the tables.

The cases execute as one pytest session (`bench/sweep_pytest.py`, one test item per case) so that
the step workloads are timed by pytest-benchmark itself: its calibration, statistics and JSON,
with a timer that waits for the device (`devices.device_clock`). Epoch and train cases time
themselves (whole epochs). Step and epoch cases are revisited in several passes (`schedule`). Whatever a case raises, the sweep goes on: an allocation
failure becomes status `oom`, anything else status `error`, and every finished case is on disk
before the next one starts. The first Ctrl-C stops after the current case; a second one aborts it.
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
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from bench import env as envmod
from bench import results as resultsmod
from bench.catalog import STEP_WORKLOADS
from bench.data import Dataset
from bench.devices import synchronize
from bench.memory import MemoryMonitor
from bench.results import CaseKey, CaseResult, Run
from bench.stats import summarize
from bench.workloads import make_step, run_epochs, run_training

MIN_ROUND_S = 1e-3  # a timed round lasts at least 1 ms, so a device wait is paid once per many small calls


@dataclass(frozen=True)
class Options:
    """Everything that decides what a run measures; stored in results.json as `options`."""

    devices: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    workloads: tuple[str, ...]
    loaders: tuple[str, ...] = ("torchvision", "resident")
    torchvision_batch_sizes: tuple[int, ...] | None = None  # None: every batch size
    train_loader: str = "resident"
    epochs: int = 10
    epoch_repeats: int = 3
    target_accuracy: float = 0.80
    max_time: float = 1.0  # per step case, all passes together
    min_rounds: int = 5
    passes: int = 3
    quick: bool = False
    plots: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(options: Options) -> list[CaseKey]:
    """Cases in execution order: device by device, workload by workload, then loaders and batch sizes."""
    cases = []
    for device in options.devices:
        for workload in options.workloads:
            if workload == "epoch":
                loaders: tuple[str | None, ...] = options.loaders
            elif workload == "train":
                loaders = (options.train_loader,)
            else:
                loaders = (None,)
            for loader in loaders:
                for batch_size in options.batch_sizes:
                    limited = options.torchvision_batch_sizes
                    if loader == "torchvision" and limited is not None and batch_size not in limited:
                        continue
                    cases.append(CaseKey(workload, device, batch_size, loader))
    return cases


@dataclass(frozen=True)
class Item:
    """One execution: a case in one pass (`epochs`: how many epochs an epoch case times in it)."""

    key: CaseKey
    pass_index: int
    epochs: int = 0


def epochs_in_pass(repeats: int, passes: int, pass_index: int) -> int:
    """Spreads an epoch case's timed epochs over the passes: 3 over 3 passes is one each."""
    return repeats // passes + (1 if pass_index < repeats % passes else 0)


def schedule(cases: list[CaseKey], passes: int, epoch_repeats: int = 1) -> list[Item]:
    """Pass 1 runs every case; later passes revisit the step and epoch cases.

    Spreading a case over passes puts its samples at different moments of the run, so drift of the
    machine shows up as spread instead of as a difference between cases measured at other times
    (the epoch-versus-train_step ratio compares exactly such cases). Training runs once.
    """
    items = []
    for pass_index in range(passes):
        for key in cases:
            if key.workload in STEP_WORKLOADS:
                items.append(Item(key, pass_index))
            elif key.workload == "epoch":
                epochs = epochs_in_pass(epoch_repeats, passes, pass_index)
                if epochs:
                    items.append(Item(key, pass_index, epochs))
            elif pass_index == 0:
                items.append(Item(key, pass_index))
    return items


OOM_ERRORS = (torch.cuda.OutOfMemoryError, MemoryError)  # torch.OutOfMemoryError is the same class


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA OOM, a CPU allocation failure, or Python's MemoryError."""
    if isinstance(error, OOM_ERRORS):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(marker in text for marker in OOM_MARKERS)


OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",  # the CPU allocator
    "Cannot allocate memory",
    "CUBLAS_STATUS_ALLOC_FAILED",  # cuBLAS creating its workspace on a full GPU
)


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
        return " ".join(str(error).split())[:300]
    return None


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

    @cached_property
    def items(self) -> list[Item]:
        return schedule(self.cases, self.options.passes, self.options.epoch_repeats)

    def measure(self, item: Item, benchmark: Any | None) -> CaseResult:
        """Measures one case in one pass and records it; never raises for what happens inside the case."""
        key = item.key
        passes = f" (pass {item.pass_index + 1}/{self.options.passes})" if self.options.passes > 1 else ""
        self.done += 1
        self.progress(f"[{self.done:>3}/{len(self.items)}] {key.label()}{passes} ...")
        earlier = self.recorded(key)
        if earlier is not None and not earlier.ok:  # an OOM in pass 1 will not fit in pass 2 either
            self.progress(f"        skipped: {earlier.status.upper()} in an earlier pass")
            return earlier
        start = time.perf_counter()
        if key.device in self.broken_devices:
            result = CaseResult.failed(
                key,
                "error",
                f"not run: {key.device} is unusable after an earlier error ({self.broken_devices[key.device]})",
            )
        else:
            try:
                result = self._measure(item, benchmark)
            except Exception as error:
                status = "oom" if is_out_of_memory(error) else "error"
                message = " ".join(f"{type(error).__name__}: {error}".split())[:500]
                result = CaseResult.failed(key, status, message)
        result = self.record(replace(result, wall_s=round(time.perf_counter() - start, 3)))
        broken = release_memory(key.device)  # after the record: a failing clean-up cannot cost the case
        if broken:
            self.broken_devices[key.device] = broken
        self.progress(f"        {describe(result)}")
        return result

    def recorded(self, key: CaseKey) -> CaseResult | None:
        return next((case for case in self.run.cases if case.key == key), None)

    def _measure(self, item: Item, benchmark: Any | None) -> CaseResult:
        key = item.key
        monitor = MemoryMonitor(key.device)
        if key.workload in STEP_WORKLOADS:
            if benchmark is None:
                raise RuntimeError("step workloads are timed by pytest-benchmark; no fixture was given")
            with monitor:
                step = make_step(key.workload, self.dataset, key.device, key.batch_size)
                benchmark(step)
            stats = benchmark.stats
            samples = list(stats.stats.data)
            return CaseResult.measured(
                key,
                samples,
                key.batch_size,
                monitor.reading,
                pass_medians=[summarize(samples).median],
                details={
                    "pass_index": [item.pass_index],  # lists grow as passes merge: one entry per pass
                    "pass_rounds": [len(samples)],  # splits samples_s back into its passes
                    "calls_per_round": stats.iterations,
                    "rounds": len(stats.stats.data),
                    "timer": getattr(stats.options.get("timer"), "__name__", str(stats.options.get("timer"))),
                },
            )
        if key.workload == "epoch":
            with monitor:
                timings = run_epochs(
                    self.dataset,
                    key.device,
                    key.batch_size,
                    key.loader or "",
                    item.epochs,
                    seed=item.pass_index,
                )
            per_epoch = timings[0].samples
            return CaseResult.measured(
                key,
                [t.seconds for t in timings],
                per_epoch,
                monitor.reading,
                details={
                    "pass_index": [item.pass_index] * len(timings),  # one entry per epoch
                    "data_seconds": [t.data_seconds for t in timings],
                    "samples_per_epoch": per_epoch,
                    "batches_per_epoch": timings[0].batches,
                },
            )
        if key.workload == "train":
            with monitor:
                training = run_training(
                    self.dataset, key.device, key.batch_size, self.options.epochs, key.loader or ""
                )
            return CaseResult.measured(
                key,
                training.epoch_seconds,
                training.samples_per_epoch,
                monitor.reading,
                test_accuracy=training.test_accuracies,
                details={
                    "target_accuracy": self.options.target_accuracy,
                    "mean_loss": training.mean_losses,
                    "eval_seconds": training.eval_seconds,
                    "data_seconds": training.data_seconds,
                    "samples_per_epoch": training.samples_per_epoch,
                },
            )
        raise ValueError(f"unknown workload {key.workload!r}")

    def record(self, result: CaseResult) -> CaseResult:
        """Adds a pass to the run (merged with the case's earlier passes) and saves the run at once."""
        for index, earlier in enumerate(self.run.cases):
            if earlier.key == result.key:
                result = earlier.merged_with(result)
                self.run.cases[index] = result
                break
        else:
            self.run.cases.append(result)
        resultsmod.save_run(self.run, self.folder)
        return result


def describe(result: CaseResult) -> str:
    """The progress line for a finished case."""
    if not result.ok:
        return f"{result.status.upper()}: {result.error}"
    spread = f"spread {result.spread:.1%}" if result.spread is not None else "spread n/a"
    noisy = " NOISY" if result.noisy else ""
    accuracy = f", test accuracy {result.test_accuracy[-1]:.1%}" if result.test_accuracy else ""
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
    """Runs every planned case through pytest; returns the run's final state."""
    import pytest

    from bench import sweep_pytest

    plugin = sweep_pytest.SweepPlugin(sweep)
    with tempfile.TemporaryDirectory(prefix="bench-pytest-") as config_dir:
        ini = Path(config_dir) / "pytest.ini"
        ini.write_text("[pytest]\n")  # the sweep must not pick up the caller's pytest configuration
        args = [
            sweep_pytest.__file__,
            "-c",
            str(ini),
            "--rootdir",
            config_dir,
            "-p",
            "no:cacheprovider",
            "-p",
            "no:terminal",
            "-p",
            "pytest_benchmark.plugin",
            "--capture=no",
            "-W",
            "ignore::pytest.PytestUnraisableExceptionWarning",
            "--benchmark-disable-gc",
            "--benchmark-min-time",
            str(MIN_ROUND_S),
            "--benchmark-max-time",
            str(sweep.options.max_time / sweep.options.passes),
            "--benchmark-min-rounds",
            str(sweep.options.min_rounds),
            "--benchmark-json",
            str(sweep.folder / resultsmod.PYTEST_BENCHMARK_FILE),
            "--benchmark-quiet",
        ]
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


def run_benchmarks(
    options: Options,
    dataset: Dataset,
    folder: Path,
    env: dict[str, Any],
    run_id: str,
    progress: Callable[[str], None] | None = None,
) -> tuple[Run, Path]:
    """Measures every planned case into `folder` (already checked writable) and writes the tables."""
    from bench.report import write_tables

    cases = plan(options)
    run = Run(
        run_id=run_id,
        created=resultsmod.utc_now(),
        env=env,
        dataset=dataset.info.as_dict(),
        options=options.as_dict(),
        planned_cases=len(cases),
    )
    sweep = Sweep(run=run, folder=folder, dataset=dataset, options=options, cases=cases)
    if progress is not None:
        sweep.progress = progress
    resultsmod.save_run(run, folder)
    cpu_before = envmod.cpu_time_split()
    try:
        run.state = execute(sweep)
    except BaseException:
        run.state = "interrupted"
        raise
    finally:
        run.env["during_run"] = envmod.disturbance_between(cpu_before, envmod.cpu_time_split())
        run.finished = resultsmod.utc_now()
        resultsmod.save_run(run, folder)
        write_tables(run, folder)
    return run, folder
