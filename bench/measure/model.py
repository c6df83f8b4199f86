"""The textbook chapter's model, loss and optimizer, exactly as printed there.

784 -> 64 -> ReLU -> 10, CrossEntropyLoss, SGD with lr 0.01 (no momentum). Every workload builds
its model through `build_training`, so a change here changes every benchmark at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

INPUT_FEATURES = 28 * 28
HIDDEN_FEATURES = 64
CLASSES = 10
LEARNING_RATE = 0.01


class Net(nn.Module):
    """The chapter's `Net`: two linear layers with a ReLU between them."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(INPUT_FEATURES, HIDDEN_FEATURES)
        self.fc2 = nn.Linear(HIDDEN_FEATURES, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


@dataclass
class Training:
    """A model with the loss and optimizer the chapter pairs with it, on one device."""

    net: Net
    criterion: nn.CrossEntropyLoss
    optimizer: torch.optim.SGD
    device: torch.device
    compile_s: float = 0.0  # seconds spent compiling (execution modes that compile; none here)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs.view(-1, INPUT_FEATURES))

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.forward(inputs), labels)

    def forward_backward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Gradients of the loss on one batch, computed from none (as `step` does): no accumulation."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(inputs, labels)
        loss.backward()
        return loss

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One training step as in the chapter's loop (zero_grad, forward, loss, backward, SGD step).

        Returns the loss without reading it, so no device wait hides in a timed loop.
        """
        loss = self.forward_backward(inputs, labels)
        self.optimizer.step()
        return loss


def build_training(
    device: torch.device | str, seed: int = 0, fused: bool = False, kind: type[Training] | None = None
) -> Training:
    """Builds the chapter's model, loss and optimizer on `device` with reproducible initial weights.

    `fused`: SGD's fused implementation (one kernel for the update) where the build has it.
    `kind`: a Training subclass that runs the same model differently (an execution mode).
    """
    device = torch.device(device)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        net = Net().to(device)
    finally:
        torch.random.set_rng_state(generator_state)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE, **({"fused": True} if fused else {}))
    return (kind or Training)(net=net, criterion=criterion, optimizer=optimizer, device=device)


@contextmanager
def preserved(training: Training) -> Iterator[None]:
    """Runs steps that must leave no trace (warm-up before a capture) and puts the weights back."""
    saved = [p.detach().clone() for p in training.net.parameters()]
    try:
        yield
    finally:
        with torch.no_grad():
            for parameter, value in zip(training.net.parameters(), saved, strict=True):
                parameter.copy_(value)


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 2000) -> float:
    """Share of `images` the model classifies correctly (eval mode, no grad, one sync at the end)."""
    was_training = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    for start in range(0, len(images), batch_size):
        outputs = net(images[start : start + batch_size].view(-1, INPUT_FEATURES))
        correct += (outputs.argmax(dim=1) == labels[start : start + batch_size]).sum()
    net.train(was_training)
    return correct.item() / max(len(images), 1)
