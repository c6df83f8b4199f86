"""The built-in models' builders: `BUILDERS[name](batch_size, size)` returns a `bench.ModelSpec`.

Every model is randomly initialised (nothing is downloaded) and has a full size and a tiny one
(`bench.core.models`: BENCH_MODEL_SIZE). The models with the data set (mlp, cnn, lstm) take the
flattened 28×28 rows the loaders produce and reshape them themselves, so the epoch and train
workloads feed them exactly what they feed the chapter's MLP; their spec's inputs stand in only
where no data set is read. The others bring synthetic inputs of their own shape.

No dropout anywhere: an execution mode is validated against eager from the same seed, which a
random mask would make differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.core.modelspec import ModelSpec
from bench.measure.mlp import CLASSES, INPUT_FEATURES, LEARNING_RATE, Net

SIDE = 28  # the data set's images are SIDE × SIDE


def _sgd(lr: float, momentum: float = 0.0) -> Callable[[Iterable[Any]], torch.optim.Optimizer]:
    return lambda parameters: torch.optim.SGD(parameters, lr=lr, momentum=momentum)


def _image_batch(batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows like the loaders' (normalized to [-1, 1]) and class labels: where no data set is read."""
    return torch.rand(batch_size, INPUT_FEATURES) * 2 - 1, torch.randint(0, CLASSES, (batch_size,))


class LeNet(nn.Module):
    """LeNet-5's shape for 28×28 images: conv 5×5 (6, padded) · pool · conv 5×5 (16) · pool · 120 · 84 · 10."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, CLASSES),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.view(-1, 1, SIDE, SIDE)))


class RowLSTM(nn.Module):
    """The classic MNIST LSTM: each image read as SIDE rows of SIDE pixels, the last state classified."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.lstm = nn.LSTM(SIDE, hidden, batch_first=True)
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(x.view(-1, SIDE, SIDE))
        return self.head(outputs[:, -1])


def mlp(batch_size: int, size: str) -> ModelSpec:
    return ModelSpec(Net(), *_image_batch(batch_size), nn.CrossEntropyLoss, _sgd(LEARNING_RATE))


def cnn(batch_size: int, size: str) -> ModelSpec:
    return ModelSpec(LeNet(), *_image_batch(batch_size), nn.CrossEntropyLoss, _sgd(0.05, 0.9))


def lstm(batch_size: int, size: str) -> ModelSpec:
    return ModelSpec(RowLSTM(), *_image_batch(batch_size), nn.CrossEntropyLoss, _sgd(0.1, 0.9))


def _resnet(constructor: str) -> Callable[[int, str], ModelSpec]:
    """torchvision's constructor with weights=None, channels-last (what convolutions on a GPU and
    oneDNN on a CPU run fastest), on synthetic images: 224² and 1,000 classes, or 32² and 10 tiny.
    Each residual block starts as the identity (`zero_init_residual`, Goyal et al.'s recipe): without
    it the first steps at small batches diverged, and a mode's loss check compares diverging runs."""

    def build(batch_size: int, size: str) -> ModelSpec:
        from torchvision import models

        side, classes = (224, 1000) if size == "full" else (32, 10)
        module = getattr(models, constructor)(weights=None, num_classes=classes, zero_init_residual=True)
        module = module.to(memory_format=torch.channels_last)
        images = torch.randn(batch_size, 3, side, side).contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, classes, (batch_size,))
        return ModelSpec(module, images, labels, nn.CrossEntropyLoss, _sgd(0.01, 0.9))

    return build


@dataclass(frozen=True)
class DecoderSize:
    layers: int
    width: int
    heads: int
    sequence: int
    vocabulary: int


DECODER_SIZES = {"full": DecoderSize(6, 512, 8, 512, 32_000), "tiny": DecoderSize(2, 64, 4, 32, 1_000)}


class Decoder(nn.Module):
    """A GPT-style decoder: token and learned position embeddings, causal pre-norm encoder layers
    (PyTorch's multi-head attention runs scaled_dot_product_attention), a final norm and the LM head."""

    mask: torch.Tensor  # the causal mask, a buffer (moves with the module, never saved)

    def __init__(self, size: DecoderSize) -> None:
        super().__init__()
        self.tokens = nn.Embedding(size.vocabulary, size.width)
        self.positions = nn.Embedding(size.sequence, size.width)
        layer = nn.TransformerEncoderLayer(
            size.width, size.heads, 4 * size.width, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.layers = nn.TransformerEncoder(layer, size.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(size.width)
        self.head = nn.Linear(size.width, size.vocabulary, bias=False)
        mask = nn.Transformer.generate_square_subsequent_mask(size.sequence)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        places = torch.arange(length, device=tokens.device)
        x = self.tokens(tokens) + self.positions(places)
        x = self.layers(x, mask=self.mask[:length, :length], is_causal=True)
        return self.head(self.norm(x))


class NextTokenLoss(nn.Module):
    """Cross-entropy of every position's logits against the next token."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def transformer(batch_size: int, size: str) -> ModelSpec:
    shape = DECODER_SIZES[size]
    tokens = torch.randint(0, shape.vocabulary, (batch_size, shape.sequence + 1))
    return ModelSpec(
        Decoder(shape),
        tokens[:, :-1].contiguous(),
        tokens[:, 1:].contiguous(),
        NextTokenLoss,
        lambda parameters: torch.optim.AdamW(parameters, lr=3e-4),
    )


BUILDERS: dict[str, Callable[[int, str], ModelSpec]] = {
    "mlp": mlp,
    "cnn": cnn,
    "lstm": lstm,
    "resnet18": _resnet("resnet18"),
    "resnet50": _resnet("resnet50"),
    "transformer": transformer,
}
