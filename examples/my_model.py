"""A model of your own for the harness: `bench run --models examples/my_model.py:build`."""

import torch
from torch import nn

import bench


def build(batch_size: int) -> bench.ModelSpec:
    """A small regression network on random data (float targets: mean squared error), trained by Adam."""
    module = nn.Sequential(nn.Linear(32, 256), nn.GELU(), nn.Linear(256, 1))
    inputs = torch.randn(batch_size, 32)
    targets = torch.randn(batch_size, 1)
    return bench.ModelSpec(
        module, inputs, targets, optimizer=lambda params: torch.optim.Adam(params, lr=1e-3)
    )
