"""The chapter's model, loss and optimizer, and the accuracy helper."""

from __future__ import annotations

import torch

from bench.measure.mlp import Net
from bench.measure.model import accuracy, build_training


def test_model_is_the_chapters_mlp() -> None:
    training = build_training("cpu")
    shapes = [tuple(parameter.shape) for parameter in training.net.parameters()]
    assert shapes == [(64, 784), (64,), (10, 64), (10,)]
    assert isinstance(training.net, Net)
    assert isinstance(training.criterion, torch.nn.CrossEntropyLoss)
    group = training.optimizer.param_groups[0]
    assert isinstance(training.optimizer, torch.optim.SGD)
    assert group["lr"] == 0.01 and group["momentum"] == 0
    # the forward pass: 784 -> 64 -> ReLU -> 10, written out with the model's own weights
    w1, b1, w2, b2 = (parameter.detach() for parameter in training.net.parameters())
    images = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    hidden = (images.reshape(5, 784) @ w1.T + b1).clamp(min=0)
    assert bool((hidden == 0).any()), "the inputs should reach the ReLU's negative side"
    assert torch.allclose(training.forward(images), hidden @ w2.T + b2, atol=1e-6)


def test_same_seed_same_weights_without_touching_the_global_generator() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = build_training("cpu", seed=5)
    assert torch.rand(1).item() == expected_next.item()  # the global generator is where it was
    torch.manual_seed(999)  # another global state: the weights must come from the seed alone
    second = build_training("cpu", seed=5)
    other = build_training("cpu", seed=6)
    for a, b in zip(first.net.parameters(), second.net.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not any(
        torch.equal(a, c) for a, c in zip(first.net.parameters(), other.net.parameters(), strict=True)
    ), "another seed must give other weights"


def test_training_steps_lower_the_loss_on_a_fixed_batch() -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(32, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (32,), generator=generator)
    training = build_training("cpu")
    first = training.step(inputs, labels).item()
    for _ in range(30):
        last = training.step(inputs, labels).item()
    assert last < first * 0.9


def test_accuracy_counts_correct_predictions() -> None:
    training = build_training("cpu")
    inputs = torch.randn(50, 784)
    predicted = training.net(inputs).argmax(dim=1)
    labels = predicted.clone()
    labels[:10] = (labels[:10] + 1) % 10
    assert accuracy(training.net, inputs, labels, batch_size=7) == 40 / 50
    assert training.net.training, "accuracy() must restore training mode"
