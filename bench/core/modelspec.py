"""`bench.ModelSpec`: what a model's `build(batch_size)` returns, built-in or the user's own.

Torch-free, even for type checkers (the layers contract keeps torch out of bench.core), so `import
bench` and the CLI's option checks stay fast: the torch types are named in comments, and
`bench.measure.userspec` checks them when a spec is built. The harness moves the module and the
tensors to each case's device itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Loss = Callable[[Any, Any], Any]  # (outputs, targets) -> a one-element tensor


@dataclass
class ModelSpec:
    """A model to benchmark at one batch size: the module, one batch of inputs and its targets.

    `loss`: a factory of the loss (called once per model, e.g. `torch.nn.CrossEntropyLoss`); None:
    cross-entropy for integer targets, mean squared error for float ones. `optimizer`: a factory
    taking the parameters (e.g. `lambda p: torch.optim.AdamW(p, lr=3e-4)`); None: SGD with lr 0.01.
    The first dimension of `inputs` and `targets` is the batch.
    """

    module: Any  # torch.nn.Module
    inputs: Any  # torch.Tensor
    targets: Any  # torch.Tensor
    loss: Callable[[], Loss] | None = None
    optimizer: Callable[[Iterable[Any]], Any] | None = None  # parameters -> torch.optim.Optimizer
