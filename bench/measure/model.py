"""A model with its loss and optimizer on one device: what every workload and mode calls.

The model is any of `bench.core.models` (built by `bench.measure.zoo`) or the user's own spec
(`bench.measure.userspec`); by default the chapter's MLP with CrossEntropyLoss and SGD lr 0.01.
Every workload builds its model through `build_training`, so a change here changes every benchmark
at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.core.catalog import CHAPTER_BATCH_SIZE
from bench.core.models import DEFAULT_MODEL, is_user_spec, model_info, model_size
from bench.core.modelspec import ModelSpec
from bench.measure.userspec import build_user_spec
from bench.measure.zoo import BUILDERS


@dataclass
class Training:
    """A model with its loss and optimizer on one device.

    `example`: the model's own batch (inputs, targets) on the device, for models without the data
    set (None: batches come from the data set).
    """

    net: nn.Module
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    device: torch.device
    compile_s: float = 0.0  # seconds spent compiling (execution modes that compile; none here)
    example: tuple[torch.Tensor, torch.Tensor] | None = None
    model: str = DEFAULT_MODEL

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.forward(inputs), labels)

    def forward_backward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Gradients of the loss on one batch, computed from none (as `step` does): no accumulation."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(inputs, labels)
        loss.backward()
        return loss

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One training step as in the chapter's loop (zero_grad, forward, loss, backward, optimizer step).

        Returns the loss without reading it, so no device wait hides in a timed loop.
        """
        loss = self.forward_backward(inputs, labels)
        self.optimizer.step()
        return loss


def model_spec(model: str, batch_size: int) -> ModelSpec:
    """The spec of a built-in model (at BENCH_MODEL_SIZE) or of the user's `file.py:build`."""
    if is_user_spec(model):
        return build_user_spec(model, batch_size)
    return BUILDERS[model](batch_size, model_size())


def _optimizer(spec: ModelSpec, net: nn.Module, fused: bool) -> torch.optim.Optimizer:
    """The spec's optimizer (SGD lr 0.01 if it names none); `fused`: its fused implementation (one
    kernel for the update), switched on in every parameter group, which each step reads."""
    make = spec.optimizer or (lambda parameters: torch.optim.SGD(parameters, lr=0.01))
    optimizer = make(net.parameters())
    if not fused:
        return optimizer
    if "fused" not in optimizer.defaults:
        raise ValueError(f"{type(optimizer).__name__} has no fused implementation")
    for group in [optimizer.defaults, *optimizer.param_groups]:
        group.update(fused=True, foreach=False)
    return optimizer


def build_training(
    device: torch.device | str,
    seed: int = 0,
    fused: bool = False,
    kind: type[Training] | None = None,
    model: str = DEFAULT_MODEL,
    batch_size: int = CHAPTER_BATCH_SIZE,
) -> Training:
    """Builds `model` with its loss and optimizer on `device`, with reproducible initial weights (and
    synthetic batch) from `seed`.

    `fused`: the optimizer's fused implementation (one kernel for the update) where the build has it.
    `kind`: a Training subclass that runs the same model differently (an execution mode).
    `batch_size`: the batch of the model's own example (models without the data set).
    """
    device = torch.device(device)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        spec = model_spec(model, batch_size)
        net = spec.module.to(device)
    finally:
        torch.random.set_rng_state(generator_state)
    assert spec.loss is not None
    example = None
    if not model_info(model).has_dataset:
        example = (spec.inputs.to(device), spec.targets.to(device))
    return (kind or Training)(
        net=net,
        criterion=spec.loss(),
        optimizer=_optimizer(spec, net, fused),
        device=device,
        example=example,
        model=model,
    )


@contextmanager
def preserved(training: Any) -> Iterator[None]:
    """Runs steps that must leave no trace (warm-up before a capture) and puts the weights back
    (parameters and buffers: a batch norm's running statistics too)."""
    state = [t.detach().clone() for t in (*training.net.parameters(), *training.net.buffers())]
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, value in zip(
                (*training.net.parameters(), *training.net.buffers()), state, strict=True
            ):
                tensor.copy_(value)


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 2000) -> float:
    """Share of `images` the model classifies correctly (eval mode, no grad, one sync at the end)."""
    was_training = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    for start in range(0, len(images), batch_size):
        outputs = net(images[start : start + batch_size])
        correct += (outputs.argmax(dim=1) == labels[start : start + batch_size]).sum()
    net.train(was_training)
    return correct.item() / max(len(images), 1)
