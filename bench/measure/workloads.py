"""The timed work, on a model with its loss and optimizer (the chapter's MLP by default). Measures; never prints or formats.

* workloads timed in rounds (`forward`, `forward_backward`, `train_step`): `STEPS[name]` turns a
  model and one fixed batch already on the device into a zero-argument callable; pytest-benchmark
  times it (see runner.py);
* `epoch`: full passes over the training set through one loader, split into time spent waiting
  for data (the loader's data clock) and the rest;
* `train`: the chapter's training run, with test accuracy after every epoch.

Garbage collection follows one policy for all timed work: collected before, and off during, every
timed round (pytest-benchmark's `--benchmark-disable-gc`) and every timed epoch (`timed_epoch`),
so the epoch-versus-train_step ratio divides like by like.

Nothing here reads a loss or a prediction inside a timed region: `.item()` would be a hidden
device wait. Losses are summed on the device and read after the clock stops.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.core.catalog import LOADERS, workload
from bench.measure.data import Dataset
from bench.measure.data_clocks import Batch, CudaEventDataClock, DataClock, HostDataClock
from bench.measure.devices import synchronize
from bench.measure.energy import EnergyMeter
from bench.measure.loaders import (
    CHAPTER_SETTINGS,
    LoaderSettings,
    ResidentBatches,
    chapter_loader,
    fixed_batch,
    normalize,
)
from bench.measure.model import Training, accuracy, build_training, preserved

WARMUP_CALLS = 10
WARMUP_BUDGET_S = 2.0  # a slow step (a large model on a CPU) warms up with fewer calls, at least two
WARMUP_BATCHES = 5

Batches = Iterable[Batch]
Step = Callable[[], None]


def forward_step(training: Training, inputs: torch.Tensor, labels: torch.Tensor) -> Step:
    training.net.eval()

    def step() -> None:
        with torch.no_grad():
            training.forward(inputs)

    return step


def forward_backward_step(training: Training, inputs: torch.Tensor, labels: torch.Tensor) -> Step:
    def step() -> None:
        training.forward_backward(inputs, labels)

    return step


def train_step(training: Training, inputs: torch.Tensor, labels: torch.Tensor) -> Step:
    def step() -> None:
        training.step(inputs, labels)

    return step


STEPS: dict[str, Callable[[Training, torch.Tensor, torch.Tensor], Step]] = {
    "forward": forward_step,
    "forward_backward": forward_backward_step,
    "train_step": train_step,
}


def case_batch(
    training: Any, dataset: Dataset, batch_size: int, device: torch.device | str, offset: int = 0
) -> Batch:
    """The fixed batch a step is timed on: the model's own example, or `batch_size` training images."""
    example = getattr(training, "example", None)
    if example is not None:
        return example
    return fixed_batch(dataset, batch_size, device, offset=offset)


def warm_up_step(step: Step, device: torch.device | str) -> None:
    """Lazy init, allocator growth, compiling and capturing paid before the clock starts: WARMUP_CALLS
    calls, or as many (two at least) as fit in WARMUP_BUDGET_S for a step that takes long."""
    start = time.perf_counter()
    for call in range(WARMUP_CALLS):
        step()
        if call >= 1:
            synchronize(device)
            if time.perf_counter() - start > WARMUP_BUDGET_S:
                break
    synchronize(device)


def make_step(
    name: str, dataset: Dataset, device: torch.device | str, batch_size: int, training: Training | None = None
) -> Step:
    """The callable a workload timed in rounds times, warmed up (`warm_up_step`).

    It works on `training` (a fresh chapter model by default).
    """
    spec = workload(name)
    if spec.step is None:
        raise ValueError(f"{name!r} is not timed in rounds: it has no step")
    training = training or build_training(device)
    inputs, labels = case_batch(training, dataset, batch_size, device)
    step = STEPS[spec.step](training, inputs, labels)
    warm_up_step(step, device)
    return step


# --- epochs ------------------------------------------------------------------------------------------


@dataclass
class EpochSource:
    """Where an epoch's batches come from, and the clock that times waiting for them."""

    batches: Callable[[], Batches]  # one epoch of batches, shuffled anew each call
    clock: Callable[[], DataClock]  # a fresh data clock for one epoch
    non_blocking: bool = False  # pinned batches: their copy to the device need not wait


def make_epochs(
    loader: str,
    dataset: Dataset,
    device: torch.device | str,
    batch_size: int,
    seed: int = 0,
    settings: LoaderSettings = CHAPTER_SETTINGS,
) -> EpochSource:
    """Epochs of batches through `loader`: `torchvision` (the chapter's, with `settings`) or `resident`.

    One DataLoader (or one resident copy) serves the whole case, so every epoch is shuffled anew,
    as the chapter's `shuffle=True` loader does from one epoch to the next.
    """
    if loader == "torchvision":
        chapter = chapter_loader(dataset, batch_size, seed=seed, settings=settings)
        return EpochSource(lambda: chapter, HostDataClock, non_blocking=settings.pin_memory)
    if loader == "resident":
        resident = ResidentBatches(dataset.train_images, dataset.train_labels, device, seed=seed)
        on_gpu = torch.device(device).type == "cuda"
        batches = -(-len(resident) // batch_size)
        clock = (lambda: CudaEventDataClock(batches)) if on_gpu else HostDataClock
        return EpochSource(lambda: resident.batches(batch_size), clock)
    raise ValueError(f"unknown loader {loader!r} ({', '.join(LOADERS)})")


@dataclass
class EpochTiming:
    """One pass over a loader: wall seconds, seconds spent waiting for batches, samples and batches seen."""

    seconds: float
    data_seconds: float
    data_timer: str
    samples: int
    batches: int
    loss_sum: torch.Tensor | None = field(default=None, repr=False)
    energy_j: float | None = None  # from the device's counter, read right around the timed epoch
    first_batch_s: float | None = None  # from the epoch's start to its first batch (workers start up)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Collect garbage now, then keep the collector off: the policy of every timed region."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def timed_epoch(
    training: Training, source: EpochSource, sum_loss: bool = False, meter: EnergyMeter | None = None
) -> EpochTiming:
    """Trains over one epoch of `source`; the device is synchronized only at the start and the end.

    `data_seconds` is the time spent producing the next batch, by the loader's data clock. The
    copy to the device is counted with compute: from pageable memory it waits for the previous
    step on a GPU, so it is not data time alone. The rest of `seconds` is compute.
    """
    device = training.device
    loss_sum = torch.zeros((), device=device) if sum_loss else None
    clock = source.clock()
    samples = count = 0
    with collector_paused():
        synchronize(device)
        joules_before = meter.read() if meter is not None else None
        start = time.perf_counter()
        iterator = iter(source.batches())
        first_batch_s = None
        while True:
            try:
                inputs, labels = clock.fetch(iterator)
            except StopIteration:
                break
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - start
            pinned = source.non_blocking
            loss = training.step(
                inputs.to(device, non_blocking=pinned), labels.to(device, non_blocking=pinned)
            )
            if loss_sum is not None:
                loss_sum += loss.detach()
            samples += len(labels)
            count += 1
        synchronize(device)
        seconds = time.perf_counter() - start
        joules = meter.joules_between(joules_before, meter.read()) if meter is not None else None
    return EpochTiming(seconds, clock.seconds(), clock.name, samples, count, loss_sum, joules, first_batch_s)


def warm_up(training: Training, source: EpochSource, samples: int, batch_size: int) -> None:
    """A few batches through the same path before the clock starts, the ragged last batch's shape too.

    Pays lazy initialisation and allocator growth, and lets a mode compile or capture every shape an
    epoch will bring. The weights are put back afterwards, so a training run starts where its seed says.
    """
    with preserved(training):
        for index, (inputs, labels) in enumerate(source.batches()):
            training.step(inputs.to(training.device), labels.to(training.device))
            if index + 1 >= WARMUP_BATCHES:
                break
        ragged = samples % batch_size
        if ragged:
            training.step(inputs[:ragged].to(training.device), labels[:ragged].to(training.device))
    synchronize(training.device)


@dataclass
class Hooks:
    """What runs around the timed epochs, never inside them: after the warm-up (a compile count),
    before each epoch (a barrier across ranks), after each epoch (memory readings), and the energy
    meter read right around each timed epoch."""

    after_warm_up: Callable[[], None] = lambda: None
    before_epoch: Callable[[], None] = lambda: None
    after_epoch: Callable[[], None] = lambda: None
    meter: EnergyMeter | None = None


def time_epochs(
    training: Training, source: EpochSource, samples: int, batch_size: int, repeats: int, hooks: Hooks
) -> list[EpochTiming]:
    """`repeats` timed passes over `source` (a data set of `samples` images), after a short warm-up."""
    warm_up(training, source, samples, batch_size)
    hooks.after_warm_up()
    timings = []
    for _ in range(repeats):
        hooks.before_epoch()
        timings.append(timed_epoch(training, source, meter=hooks.meter))
        hooks.after_epoch()
    return timings


def run_epochs(
    dataset: Dataset,
    device: torch.device | str,
    batch_size: int,
    loader: str,
    repeats: int,
    seed: int = 0,
    training: Training | None = None,
    hooks: Hooks | None = None,
) -> list[EpochTiming]:
    """`repeats` full passes over the training set through `loader`, after a short warm-up.

    `training`: the model to train (a fresh chapter model by default; an execution mode's otherwise).
    """
    training = training or build_training(device)
    source = make_epochs(loader, dataset, device, batch_size, seed=seed)
    return time_epochs(training, source, len(dataset.train_labels), batch_size, repeats, hooks or Hooks())


# --- training runs -----------------------------------------------------------------------------------


@dataclass
class TrainingRun:
    """The chapter's training run: per epoch, training seconds, evaluation seconds, loss and accuracy."""

    seed: int
    epoch_seconds: list[float]
    data_seconds: list[float]
    data_timer: str
    eval_seconds: list[float]
    mean_losses: list[float]
    test_accuracies: list[float]
    samples_per_epoch: int
    energy_j: list[float | None] = field(default_factory=list)
    compile_s: float = 0.0


def train_epochs(
    training: Training,
    source: EpochSource,
    dataset: Dataset,
    batch_size: int,
    epochs: int,
    seed: int,
    hooks: Hooks,
    evaluate: bool = True,
) -> TrainingRun:
    """Trains `training` for `epochs` epochs of `source`; the test accuracy after each (`evaluate`: this
    process evaluates; across ranks only rank 0 does), timed apart from training.

    It first takes a few steps on the same path with its weights put back afterwards (`warm_up`), so
    one-time costs (CUDA context, cuBLAS handles, compiling, capturing) do not land in the first epoch.
    """
    device = training.device
    warm_up(training, source, len(dataset.train_labels), batch_size)
    hooks.after_warm_up()
    test_inputs = normalize(dataset.test_images).to(device) if evaluate else None
    test_labels = dataset.test_labels.to(device) if evaluate else None
    run = TrainingRun(seed, [], [], "", [], [], [], 0, compile_s=training.compile_s)
    for _ in range(epochs):
        hooks.before_epoch()
        timing = timed_epoch(training, source, sum_loss=True, meter=hooks.meter)
        assert timing.loss_sum is not None
        run.epoch_seconds.append(timing.seconds)
        run.data_seconds.append(timing.data_seconds)
        run.data_timer = timing.data_timer
        run.energy_j.append(timing.energy_j)
        run.mean_losses.append(timing.loss_sum.item() / max(timing.batches, 1))
        run.samples_per_epoch = timing.samples
        if test_inputs is not None and test_labels is not None:
            eval_start = time.perf_counter()
            run.test_accuracies.append(accuracy(training.net, test_inputs, test_labels))
            run.eval_seconds.append(time.perf_counter() - eval_start)
        hooks.after_epoch()
    return run


def run_training(
    dataset: Dataset,
    device: torch.device | str,
    batch_size: int,
    epochs: int,
    loader: str = "resident",
    seed: int = 0,
    build: Callable[[torch.device | str, int], Training] = build_training,
    hooks: Hooks | None = None,
) -> TrainingRun:
    """Trains a fresh model (`build(device, seed)`, an execution mode's) for `epochs` epochs from `seed`
    (weights and shuffling) through `loader`."""
    source = make_epochs(loader, dataset, device, batch_size, seed=seed)
    training = build(device, seed)
    return train_epochs(training, source, dataset, batch_size, epochs, seed, hooks or Hooks())
