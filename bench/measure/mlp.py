"""The textbook chapter's model, exactly as printed there: 784 -> 64 -> ReLU -> 10.

Its loss (CrossEntropyLoss) and optimizer (SGD with lr 0.01, no momentum) are its entry in
`bench.measure.zoo`; its exact FLOP count is `bench.measure.efficiency.flops_per_sample`.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_FEATURES = 28 * 28
HIDDEN_FEATURES = 64
CLASSES = 10
LEARNING_RATE = 0.01


class Net(nn.Module):
    """The chapter's `Net`: two linear layers with a ReLU between them, on rows of 784 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(INPUT_FEATURES, HIDDEN_FEATURES)
        self.fc2 = nn.Linear(HIDDEN_FEATURES, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.view(-1, INPUT_FEATURES)))
        return self.fc2(x)
