"""One case measured for one pass, turned into its records: one measuring function per kind of timing.

* rounds (`forward`, `forward_backward`, `train_step`): pytest-benchmark times the step, with the
  timer and round length the engine gave its fixture;
* epochs: timed passes over the training set through the case's loader;
* training runs: the chapter's run, each from its own seed.

Where the model trains and what it reads (`Placement`) is the one thing a case across processes
changes: a DistributedDataParallel model on each rank, the resident loader sharded per rank, a
barrier before each epoch and rank 0 alone evaluating (`bench.engine.distributed`). The measuring
is the same code. Measures; never prints, formats or writes files.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.core.catalog import Timing, workload
from bench.core.keys import CaseKey
from bench.core.plan import Item
from bench.core.records import EnergyRecord, PassRecord
from bench.env.contention import Watch
from bench.measure import modes
from bench.measure.data import Dataset
from bench.measure.devices import synchronize
from bench.measure.efficiency import count_ops, counted_flops_per_sample
from bench.measure.energy import EnergyMeter
from bench.measure.health_watch import DeviceWatch
from bench.measure.kernels import count_kernels
from bench.measure.loaders import LoaderSettings
from bench.measure.memory import MemoryMonitor
from bench.measure.model import Training
from bench.measure.workloads import (
    EpochSource,
    Hooks,
    case_batch,
    make_epochs,
    make_step,
    time_epochs,
    train_epochs,
)


@contextmanager
def case_context(key: CaseKey) -> Iterator[None]:
    """What a case runs under: its intra-op thread count (CPU), its mode's context (TF32 flags), and on
    a GPU its device as the current one. Without that, what uses the current device rather than the
    tensors' (a CUDA graph's capture stream, `torch.cuda.current_stream()`, new side streams) would
    work on cuda:0 for a case on cuda:1."""
    previous = torch.get_num_threads()
    if key.threads is not None:
        torch.set_num_threads(key.threads)
    device = torch.device(key.device)
    try:
        with (
            torch.cuda.device(device) if device.type == "cuda" else nullcontext(),
            modes.mode(key.mode).context(),
        ):
            yield
    finally:
        torch.set_num_threads(previous)


def energy_record(meter: EnergyMeter, joules: list[float | None], seconds: float) -> EnergyRecord | None:
    """The pass's energy, when every timed stretch of it was counted."""
    if not joules or any(j is None for j in joules) or seconds <= 0 or meter.source is None:
        return None
    return EnergyRecord(sum(j for j in joules if j is not None), seconds, meter.source)


@dataclass
class Measured:
    """What one item measured: its records, the samples in one timed unit, and the case's facts
    (FLOPs per sample and ops per step, counted untimed on the case's first pass)."""

    records: list[PassRecord]
    samples_per_unit: int
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Placement:
    """Where a case's model trains and what it reads: `build(seed)` makes the model, `source(seed)` the
    epochs of batches; `before_epoch` runs before each timed epoch; `evaluates`: this process measures
    the test accuracy."""

    device: torch.device
    build: Callable[[int], Training]
    source: Callable[[int], EpochSource]
    before_epoch: Callable[[], None] = lambda: None
    evaluates: bool = True


def one_process(key: CaseKey, dataset: Dataset) -> Placement:
    """A case of one process: the mode's model on the case's device, the case's loader."""
    device = torch.device(key.device)
    return Placement(
        device=device,
        build=lambda seed: modes.build(key.mode, device, seed, key.model, key.batch_size),
        source=lambda seed: make_epochs(
            key.loader or "", dataset, device, key.batch_size, seed=seed, settings=LoaderSettings.of(key)
        ),
    )


def step_facts(
    key: CaseKey, dataset: Dataset, training: Any, call: Callable[[], Any] | None = None
) -> dict[str, int | None]:
    """FLOPs per sample, parameters, ATen ops and (on a GPU) kernels per call of this case's model and
    mode, counted untimed: those of `call` (the timed callable of a round, already warm), or else of one
    training step on a fixed batch after a first one (so an epoch's or a training run's count leaves out
    capture)."""
    inputs, labels = case_batch(training, dataset, key.batch_size, key.device)
    if call is None:
        call = lambda: training.step(inputs, labels)  # noqa: E731
        call()  # a capture or a compilation happens now, not in what is counted
    backward = workload(key.workload).backward
    return {
        "flops_per_sample": counted_flops_per_sample(
            getattr(training, "base", training), inputs, labels, backward
        ),
        "parameters": sum(p.numel() for p in training.net.parameters()),
        "ops_per_step": count_ops(call),
        "kernels_per_step": count_kernels(call, key.device),
    }


def _graphs_after_warm_up(key: CaseKey, counts: list[int]) -> Callable[[], None]:
    """A hook that notes how many graphs torch.compile has built so far (a recompile shows as a rise)."""
    return lambda: counts.append(modes.compiled_graphs()) if key.mode == "compile" else None


def _recompiles(key: CaseKey, counts: list[int]) -> int | None:
    return modes.compiled_graphs() - counts[0] if key.mode == "compile" and counts else None


def measure_rounds(
    item: Item, dataset: Dataset, meter: EnergyMeter, benchmark: Any, first_pass: bool
) -> Measured:
    """One pass of rounds, timed by pytest-benchmark's fixture (`benchmark`)."""
    key = item.key
    if benchmark is None:
        raise RuntimeError("workloads timed in rounds are timed by pytest-benchmark; no fixture was given")
    monitor = MemoryMonitor(key.device)
    with monitor:
        training = modes.build(key.mode, key.device, model=key.model, batch_size=key.batch_size)
        step = make_step(key.workload, dataset, key.device, key.batch_size, training)
        graphs = modes.compiled_graphs() if key.mode == "compile" else None
        gc.collect()  # pytest-benchmark keeps the collector off during the rounds (disable_gc)
        joules_before, start = meter.read(), time.perf_counter()
        with Watch() as watch, DeviceWatch(key.device) as health:
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
        contention=watch.record,
        device_health=health.record,
    )
    facts = step_facts(key, dataset, training, step) if first_pass else {}
    return Measured([record], key.batch_size, facts)


def measure_epochs(
    item: Item, dataset: Dataset, meter: EnergyMeter, place: Placement, first_pass: bool
) -> Measured:
    key = item.key
    monitor = MemoryMonitor(place.device)
    start = time.perf_counter()
    graphs: list[int] = []
    with monitor:
        training = place.build(0)
        hooks = Hooks(_graphs_after_warm_up(key, graphs), place.before_epoch, monitor.sample, meter)
        source = place.source(item.pass_index)
        with Watch() as watch, DeviceWatch(key.device) as health:
            timings = time_epochs(
                training, source, len(dataset.train_labels), key.batch_size, item.repeats, hooks
            )
        recompiles = _recompiles(key, graphs)
    record = PassRecord(
        index=item.pass_index,
        samples_s=[t.seconds for t in timings],
        data_seconds=[t.data_seconds for t in timings],
        data_timer=timings[0].data_timer,
        batches=timings[0].batches,
        first_batch_s=[t.first_batch_s or 0.0 for t in timings]
        if all(t.first_batch_s for t in timings)
        else None,
        compile_s=training.compile_s or None,
        recompiles=recompiles,
        memory=monitor.reading,
        energy=energy_record(meter, [t.energy_j for t in timings], sum(t.seconds for t in timings)),
        wall_s=round(time.perf_counter() - start, 3),
        contention=watch.record,
        device_health=health.record,
    )
    facts = step_facts(key, dataset, training) if first_pass and key.processes == 1 else {}
    return Measured([record], timings[0].samples, facts)


def measure_runs(
    item: Item, dataset: Dataset, meter: EnergyMeter, place: Placement, epochs: int, first_pass: bool
) -> Measured:
    """Training runs `item.first` .. `item.first + item.repeats - 1`, each from its own seed."""
    key = item.key
    records, samples = [], 0
    for run_index in range(item.first, item.first + item.repeats):
        monitor = MemoryMonitor(place.device)
        start = time.perf_counter()
        graphs: list[int] = []
        with monitor:
            training = place.build(run_index)
            hooks = Hooks(_graphs_after_warm_up(key, graphs), place.before_epoch, monitor.sample, meter)
            source = place.source(run_index)
            with Watch() as watch, DeviceWatch(key.device) as health:
                run = train_epochs(
                    training, source, dataset, key.batch_size, epochs, run_index, hooks, place.evaluates
                )
            recompiles = _recompiles(key, graphs)
        records.append(
            PassRecord(
                index=run_index,
                seed=run.seed,
                samples_s=run.epoch_seconds,
                data_seconds=run.data_seconds,
                data_timer=run.data_timer,
                test_accuracy=run.test_accuracies or None,
                mean_loss=[*run.mean_losses],
                eval_seconds=run.eval_seconds or None,
                compile_s=run.compile_s or None,
                recompiles=recompiles,
                memory=monitor.reading,
                energy=energy_record(meter, run.energy_j, sum(run.epoch_seconds)),
                wall_s=round(time.perf_counter() - start, 3),
                contention=watch.record,
                device_health=health.record,
            )
        )
        samples = run.samples_per_epoch
    facts = step_facts(key, dataset, place.build(0)) if first_pass and key.processes == 1 else {}
    return Measured(records, samples, facts)


def measure_one_process(
    item: Item, dataset: Dataset, epochs: int, meter: EnergyMeter, benchmark: Any, first_pass: bool
) -> Measured:
    """One item of a one-process case, by its workload's kind of timing."""
    timing = workload(item.key.workload).timing
    if timing is Timing.ROUNDS:
        return measure_rounds(item, dataset, meter, benchmark, first_pass)
    place = one_process(item.key, dataset)
    if timing is Timing.EPOCHS:
        return measure_epochs(item, dataset, meter, place, first_pass)
    return measure_runs(item, dataset, meter, place, epochs, first_pass)
