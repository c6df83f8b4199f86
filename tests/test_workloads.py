"""Each workload on the CPU at a small size, on small real data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.data import Dataset, fixed_batch, load_dataset
from bench.model import build_training
from bench.workloads import STEP_WORKLOADS, make_step, run_epochs, run_training, step_function
from tests.conftest import SMALL_TRAIN


@pytest.fixture(scope="module")
def dataset(small_real_dir: Path) -> Dataset:
    return load_dataset("fashion-mnist", small_real_dir)


@pytest.mark.parametrize("workload", STEP_WORKLOADS)
def test_step_workloads_do_what_their_name_says(dataset: Dataset, workload: str) -> None:
    training = build_training("cpu")
    inputs, labels = fixed_batch(dataset, 32, "cpu")
    step = step_function(workload, training, inputs, labels)
    before = [p.detach().clone() for p in training.net.parameters()]
    step()
    after = list(training.net.parameters())
    changed = any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    has_grad = all(p.grad is not None for p in after)
    assert changed == (workload == "train_step")
    assert has_grad == (workload != "forward")
    assert training.net.training == (workload != "forward")


@pytest.mark.parametrize("workload", STEP_WORKLOADS)
def test_make_step_returns_a_warmed_up_callable(dataset: Dataset, workload: str) -> None:
    step = make_step(workload, dataset, "cpu", 16)
    assert step() is None


def test_unknown_step_workload_is_rejected(dataset: Dataset) -> None:
    with pytest.raises(ValueError, match="not a step workload"):
        make_step("epoch", dataset, "cpu", 8)


@pytest.mark.parametrize("loader", ["torchvision", "resident"])
def test_epoch_counts_true_samples_and_splits_data_time(dataset: Dataset, loader: str) -> None:
    timings = run_epochs(dataset, "cpu", 128, loader, repeats=2)
    assert len(timings) == 2
    for timing in timings:
        assert timing.samples == SMALL_TRAIN  # 7 * 128 + 104: the ragged batch counts its true size
        assert timing.batches == 8
        assert 0 < timing.data_seconds < timing.seconds


def test_torchvision_loader_spends_more_of_the_epoch_on_data(dataset: Dataset) -> None:
    chapter = run_epochs(dataset, "cpu", 64, "torchvision", repeats=1)[0]
    resident = run_epochs(dataset, "cpu", 64, "resident", repeats=1)[0]
    assert chapter.data_seconds / chapter.seconds > resident.data_seconds / resident.seconds


def test_training_run_learns_real_data(dataset: Dataset) -> None:
    run = run_training(dataset, "cpu", batch_size=16, epochs=3)
    assert len(run.test_accuracies) == len(run.epoch_seconds) == len(run.mean_losses) == 3
    assert run.samples_per_epoch == SMALL_TRAIN
    assert run.mean_losses[-1] < run.mean_losses[0]
    assert run.test_accuracies[-1] > 0.5  # 10 classes: chance is 0.1
    assert all(seconds > 0 for seconds in run.eval_seconds)


def test_training_with_the_chapters_loader(dataset: Dataset) -> None:
    run = run_training(dataset, "cpu", batch_size=64, epochs=1, loader="torchvision")
    assert run.samples_per_epoch == SMALL_TRAIN and run.data_seconds[0] > 0
