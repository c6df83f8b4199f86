"""`bench.ModelSpec`: what a model's `build(batch_size)` returns, built-in or the user's own.

Torch-free at import (the tensors are only named in annotations), so `import bench` and the CLI's
option checks stay fast; the harness moves the module and the tensors to each case's device itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

Loss = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass
class ModelSpec:
    """A model to benchmark at one batch size: the module, one batch of inputs and its targets.

    `loss`: a factory of the loss (called once per model, e.g. `torch.nn.CrossEntropyLoss`); None:
    cross-entropy for integer targets, mean squared error for float ones. `optimizer`: a factory
    taking the parameters (e.g. `lambda p: torch.optim.AdamW(p, lr=3e-4)`); None: SGD with lr 0.01.
    The first dimension of `inputs` and `targets` is the batch.
    """

    module: torch.nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    loss: Callable[[], Loss] | None = None
    optimizer: Callable[[Iterable[Any]], torch.optim.Optimizer] | None = None
