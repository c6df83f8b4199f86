"""Each workload on the CPU at a small size, on small real data."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bench.core.catalog import WORKLOAD_TABLE, workload
from bench.measure.data import Dataset, load_dataset
from bench.measure.loaders import fixed_batch
from bench.measure.model import build_training
from bench.measure.workloads import (
    STEPS,
    EpochSource,
    HostDataClock,
    make_epochs,
    make_step,
    run_epochs,
    run_training,
    timed_epoch,
)
from tests.conftest import SMALL_TRAIN, cuda_test

ROUND_WORKLOADS = [spec.name for spec in WORKLOAD_TABLE if spec.in_rounds]


@pytest.fixture(scope="module")
def dataset(small_real_dir: Path) -> Dataset:
    return load_dataset("fashion-mnist", small_real_dir)


def test_every_workload_timed_in_rounds_has_its_step() -> None:
    assert ROUND_WORKLOADS == ["forward", "forward_backward", "train_step"]
    assert {workload(name).step for name in ROUND_WORKLOADS} == set(STEPS)


@pytest.mark.parametrize("name", ROUND_WORKLOADS)
def test_step_workloads_do_what_their_name_says(dataset: Dataset, name: str) -> None:
    training = build_training("cpu")
    inputs, labels = fixed_batch(dataset, 32, "cpu")
    step = STEPS[name](training, inputs, labels)
    before = [p.detach().clone() for p in training.net.parameters()]
    step()
    after = list(training.net.parameters())
    changed = any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    has_grad = all(p.grad is not None for p in after)
    assert changed == (name == "train_step")
    assert has_grad == (name != "forward")
    assert training.net.training == (name != "forward")


def test_forward_backward_starts_from_no_gradient_every_call(dataset: Dataset) -> None:
    """Called twice, it leaves the gradients of one call, as train_step's zero_grad does: no accumulation."""
    inputs, labels = fixed_batch(dataset, 32, "cpu")
    training = build_training("cpu")
    step = STEPS["forward_backward"](training, inputs, labels)
    step()
    once = [p.grad.clone() for p in training.net.parameters()]
    step()
    for grad, parameter in zip(once, training.net.parameters(), strict=True):
        assert torch.allclose(parameter.grad, grad), "the second call added into the first's gradients"


def test_train_step_minus_forward_backward_is_the_optimizer(dataset: Dataset) -> None:
    """Both steps compute the same gradients from the same weights; only the SGD update differs."""
    inputs, labels = fixed_batch(dataset, 32, "cpu")
    with_update, without = build_training("cpu", seed=4), build_training("cpu", seed=4)
    STEPS["forward_backward"](without, inputs, labels)()
    STEPS["train_step"](with_update, inputs, labels)()
    for updated, plain in zip(with_update.net.parameters(), without.net.parameters(), strict=True):
        assert torch.allclose(updated.grad, plain.grad)
        assert torch.allclose(updated.detach(), plain.detach() - 0.01 * plain.grad)


@pytest.mark.parametrize("name", ROUND_WORKLOADS)
def test_make_step_is_warmed_up_and_repeatable(dataset: Dataset, name: str) -> None:
    training = build_training("cpu")
    initial = [p.detach().clone() for p in training.net.parameters()]
    step = make_step(name, dataset, "cpu", 16, training)
    warmed = any(not torch.equal(a, b) for a, b in zip(initial, training.net.parameters(), strict=True))
    assert warmed == (name == "train_step"), "the warm-up runs the step itself"
    if name == "forward":
        assert not training.net.training  # eval mode, and nothing about the model moves
    else:
        assert all(p.grad is not None for p in training.net.parameters()), "the warm-up ran the step"
    weights = [p.detach().clone() for p in training.net.parameters()]
    step()
    moved = any(not torch.equal(a, b) for a, b in zip(weights, training.net.parameters(), strict=True))
    assert moved == (name == "train_step")


def test_workloads_not_timed_in_rounds_have_no_step(dataset: Dataset) -> None:
    with pytest.raises(ValueError, match="not timed in rounds"):
        make_step("epoch", dataset, "cpu", 8)


@pytest.mark.parametrize("loader", ["torchvision", "resident"])
def test_epoch_counts_true_samples_and_splits_data_time(dataset: Dataset, loader: str) -> None:
    timings = run_epochs(dataset, "cpu", 128, loader, repeats=2)
    assert len(timings) == 2
    for timing in timings:
        assert timing.samples == SMALL_TRAIN  # 7 * 128 + 104: the ragged batch counts its true size
        assert timing.batches == 8
        assert 0 < timing.data_seconds < timing.seconds
        assert timing.data_timer == "host clock"


def test_torchvision_loader_spends_more_of_the_epoch_on_data(dataset: Dataset) -> None:
    chapter = run_epochs(dataset, "cpu", 64, "torchvision", repeats=1)[0]
    resident = run_epochs(dataset, "cpu", 64, "resident", repeats=1)[0]
    assert chapter.data_seconds / chapter.seconds > resident.data_seconds / resident.seconds


def test_timed_epochs_run_with_the_collector_off_as_rounds_do(dataset: Dataset) -> None:
    """The GC policy of every timed region: collected before, off during (pytest-benchmark's disable_gc)."""
    source = make_epochs("resident", dataset, "cpu", 100)
    seen: list[bool] = []

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in source.batches():
            seen.append(gc.isenabled())
            yield batch

    assert gc.isenabled()
    timed_epoch(build_training("cpu"), EpochSource(batches, HostDataClock))
    assert seen and not any(seen), "the collector ran during the timed epoch"
    assert gc.isenabled(), "the collector must be back on after the epoch"


@pytest.mark.slow
def test_training_runs_learn_real_data_from_their_own_seed(dataset: Dataset) -> None:
    first = run_training(dataset, "cpu", batch_size=16, epochs=3, seed=0)
    again = run_training(dataset, "cpu", batch_size=16, epochs=3, seed=0)
    other = run_training(dataset, "cpu", batch_size=16, epochs=3, seed=1)
    assert len(first.test_accuracies) == len(first.epoch_seconds) == len(first.mean_losses) == 3
    assert first.samples_per_epoch == SMALL_TRAIN
    assert first.mean_losses[-1] < first.mean_losses[0]
    assert first.test_accuracies[-1] > 0.5  # 10 classes: chance is 0.1
    assert all(seconds > 0 for seconds in first.eval_seconds)
    assert first.mean_losses == again.mean_losses, "the same seed must give the same run"
    assert first.mean_losses != other.mean_losses, "another seed must give another run"


def test_training_with_the_chapters_loader(dataset: Dataset) -> None:
    run = run_training(dataset, "cpu", batch_size=64, epochs=2, loader="torchvision")
    assert run.samples_per_epoch == SMALL_TRAIN and all(seconds > 0 for seconds in run.data_seconds)
    assert run.mean_losses[1] < run.mean_losses[0] < 2.31  # it learns from the chapter's pipeline
    assert run.test_accuracies[-1] > 0.3


@cuda_test
def test_resident_data_on_a_gpu_is_timed_by_cuda_events(dataset: Dataset) -> None:
    """The gather is asynchronous on a GPU: its share is GPU time from events, not the launch's host time."""
    timing = run_epochs(dataset, "cuda:0", 64, "resident", repeats=1)[0]
    assert timing.data_timer == "cuda events"
    assert 0 < timing.data_seconds < timing.seconds
    host = run_epochs(dataset, "cuda:0", 64, "torchvision", repeats=1)[0]
    assert host.data_timer == "host clock"


@cuda_test
def test_the_events_data_clock_makes_its_events_before_the_epoch_and_none_inside(dataset: Dataset) -> None:
    """One pair per batch made up front (not two new events per batch while timed), none for the end."""
    from bench.measure.data_clocks import CudaEventDataClock
    from bench.measure.workloads import make_epochs, timed_epoch

    source = make_epochs("resident", dataset, "cuda:0", 64)
    clock = source.clock()
    assert isinstance(clock, CudaEventDataClock)
    batches = -(-SMALL_TRAIN // 64)
    made = clock.events_made
    assert made == 2 * batches
    timing = timed_epoch(build_training("cuda:0"), EpochSource(source.batches, lambda: clock))
    assert timing.batches == batches and clock.events_made == made  # nothing made inside the epoch
    assert 0 < timing.data_seconds < timing.seconds
