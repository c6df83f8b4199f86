"""The timed work, on the chapter's model, loss and optimizer. Measures; never prints or formats.

* step workloads (`forward`, `forward_backward`, `train_step`): `make_step` returns a zero-argument
  callable over a fixed batch already on the device; pytest-benchmark times it (see runner.py).
* `epoch`: full passes over the training set through one loader, split into time spent waiting
  for batches (data) and the rest (compute).
* `train`: the chapter's training run, with test accuracy after every epoch.

Nothing here reads a loss or a prediction inside a timed region: `.item()` would be a hidden
device wait. Losses are summed on the device and read after the clock stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from bench.catalog import LOADERS, STEP_WORKLOADS, WORKLOADS  # noqa: F401 (re-exported)
from bench.data import Dataset, ResidentBatches, chapter_loader, fixed_batch, normalize
from bench.devices import synchronize
from bench.model import Training, accuracy, build_training

WARMUP_CALLS = 10
WARMUP_BATCHES = 5

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def step_function(
    workload: str, training: Training, inputs: torch.Tensor, labels: torch.Tensor
) -> Callable[[], None]:
    """The zero-argument callable of a step workload over one fixed batch."""
    if workload == "forward":
        training.net.eval()

        def step() -> None:
            with torch.no_grad():
                training.net(inputs)

    elif workload == "forward_backward":

        def step() -> None:
            loss = training.criterion(training.net(inputs), labels)
            loss.backward()

    elif workload == "train_step":

        def step() -> None:
            training.step(inputs, labels)

    else:
        raise ValueError(f"{workload!r} is not a step workload ({', '.join(STEP_WORKLOADS)})")
    return step


def make_step(
    workload: str, dataset: Dataset, device: torch.device | str, batch_size: int
) -> Callable[[], None]:
    """The callable a step workload times, warmed up: lazy init and allocator growth are paid here."""
    inputs, labels = fixed_batch(dataset, batch_size, device)
    step = step_function(workload, build_training(device), inputs, labels)
    for _ in range(WARMUP_CALLS):
        step()
    synchronize(device)
    return step


@dataclass
class EpochTiming:
    """One pass over a loader: wall seconds, seconds spent waiting for batches, samples and batches seen."""

    seconds: float
    data_seconds: float
    samples: int
    batches: int
    loss_sum: torch.Tensor | None = field(default=None, repr=False)


def timed_epoch(training: Training, batches: Batches, sum_loss: bool = False) -> EpochTiming:
    """Trains over `batches` once; the device is synchronized only at the start and the end.

    `data_seconds` is the host time spent waiting for the loader to produce the next batch. The copy
    to the device is counted with compute: from pageable memory it waits for the previous step on a
    GPU, so it is not data time alone. The rest of `seconds` is compute (launches and, at the final
    wait, the device catching up).
    """
    device = training.device
    loss_sum = torch.zeros((), device=device) if sum_loss else None
    samples = count = 0
    data_seconds = 0.0
    synchronize(device)
    start = time.perf_counter()
    iterator = iter(batches)
    while True:
        fetch_start = time.perf_counter()
        try:
            inputs, labels = next(iterator)
        except StopIteration:
            data_seconds += time.perf_counter() - fetch_start
            break
        data_seconds += time.perf_counter() - fetch_start
        loss = training.step(inputs.to(device), labels.to(device))
        if loss_sum is not None:
            loss_sum += loss.detach()
        samples += len(labels)
        count += 1
    synchronize(device)
    return EpochTiming(time.perf_counter() - start, data_seconds, samples, count, loss_sum)


def make_epochs(
    loader: str, dataset: Dataset, device: torch.device | str, batch_size: int, seed: int = 0
) -> Callable[[], Batches]:
    """Epochs of batches through `loader`: `torchvision` (the chapter's) or `resident`.

    One DataLoader (or one resident copy) serves the whole case, so every epoch is shuffled anew,
    as the chapter's `shuffle=True` loader does from one epoch to the next.
    """
    if loader == "torchvision":
        chapter = chapter_loader(dataset, batch_size, seed=seed)
        return lambda: chapter
    if loader == "resident":
        resident = ResidentBatches(dataset.train_images, dataset.train_labels, device, seed=seed)
        return lambda: resident.batches(batch_size)
    raise ValueError(f"unknown loader {loader!r} ({', '.join(LOADERS)})")


def _warm_up(training: Training, batches: Batches) -> None:
    """A few batches through the same path before the clock starts (lazy init, allocator growth)."""
    for index, (inputs, labels) in enumerate(batches):
        training.step(inputs.to(training.device), labels.to(training.device))
        if index + 1 >= WARMUP_BATCHES:
            break
    synchronize(training.device)


def run_epochs(
    dataset: Dataset, device: torch.device | str, batch_size: int, loader: str, repeats: int, seed: int = 0
) -> list[EpochTiming]:
    """`repeats` full passes over the training set through `loader`, after a short warm-up."""
    training = build_training(device)
    epochs = make_epochs(loader, dataset, device, batch_size, seed=seed)
    _warm_up(training, epochs())
    return [timed_epoch(training, epochs()) for _ in range(repeats)]


@dataclass
class TrainingRun:
    """The chapter's training run: per epoch, training seconds, evaluation seconds, loss and accuracy."""

    epoch_seconds: list[float]
    data_seconds: list[float]
    eval_seconds: list[float]
    mean_losses: list[float]
    test_accuracies: list[float]
    samples_per_epoch: int


def run_training(
    dataset: Dataset, device: torch.device | str, batch_size: int, epochs: int, loader: str = "resident"
) -> TrainingRun:
    """Trains a fresh model for `epochs` epochs; evaluation is timed apart from training.

    A throwaway model first takes a few steps on the same path, so one-time start-up costs (CUDA
    context, cuBLAS handles, lazily loaded kernels) do not land in the first epoch.
    """
    batches = make_epochs(loader, dataset, device, batch_size)
    _warm_up(build_training(device, seed=1), batches())
    training = build_training(device)
    test_inputs = normalize(dataset.test_images).to(device)
    test_labels = dataset.test_labels.to(device)
    run = TrainingRun([], [], [], [], [], 0)
    for _ in range(epochs):
        timing = timed_epoch(training, batches(), sum_loss=True)
        assert timing.loss_sum is not None
        run.epoch_seconds.append(timing.seconds)
        run.data_seconds.append(timing.data_seconds)
        run.mean_losses.append(timing.loss_sum.item() / max(timing.batches, 1))
        run.samples_per_epoch = timing.samples
        eval_start = time.perf_counter()
        run.test_accuracies.append(accuracy(training.net, test_inputs, test_labels))
        run.eval_seconds.append(time.perf_counter() - eval_start)
    return run
