"""The table of models: what each built-in model is, what it trains on, its batch sizes, loss and optimizer.

A model is a table entry, like a workload: planning, the skipped cells of workloads a model cannot
run and the README's table read it; `bench.measure.zoo` holds the builders under the same names.
The user's own model enters through the same door: a name with a colon (`path/to/file.py:build`,
`package.module:build`) is a user spec, whose entry says it has no data set and trains with what
its `build` returns. Torch-free, so `--help` and option checks stay fast.

Sizes: every built-in model has a full size (the table's) and a tiny one for tests and smoke runs,
chosen with the environment variable `BENCH_MODEL_SIZE` (`full`, the default, or `tiny`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.catalog import CHAPTER_BATCH_SIZE, Timing, workload
from bench.core.envvars import env_text
from bench.core.errors import UsageError

SIZE_ENV = "BENCH_MODEL_SIZE"
SIZES = ("full", "tiny")
DEFAULT_MODEL = "mlp"


@dataclass(frozen=True)
class ModelInfo:
    """One model: how it reads in the README and the tables, and what the harness plans for it."""

    name: str
    what: str  # the architecture, in a phrase
    size: str  # its full size, in words (README, the models table)
    tiny: str  # its tiny size (BENCH_MODEL_SIZE=tiny)
    has_dataset: bool  # trains on the run's data set (MNIST / Fashion-MNIST): epoch and train run
    batch_sizes: tuple[int, ...]  # its default batch sizes (when --batch-sizes is not given)
    optimizer: str
    loss: str


# fmt: off
MODEL_TABLE = (
    ModelInfo("mlp", "the chapter's MLP: 784 -> 64 -> ReLU -> 10", "50,890 parameters", "the same",
              True, (16, CHAPTER_BATCH_SIZE, 256, 1024, 4096), "SGD lr 0.01", "cross-entropy"),
    ModelInfo("cnn", "LeNet-style: two 5x5 convolutions with max-pooling, three linear layers",
              "28x28 input, 6 and 16 channels, 61,706 parameters", "the same",
              True, (16, CHAPTER_BATCH_SIZE, 256, 1024), "SGD lr 0.05 momentum 0.9", "cross-entropy"),
    ModelInfo("lstm", "an LSTM reading each image as 28 rows of 28 pixels, a linear head on the last state",
              "one layer, 128 hidden, 82,186 parameters", "the same",
              True, (16, CHAPTER_BATCH_SIZE, 256, 1024), "SGD lr 0.1 momentum 0.9", "cross-entropy"),
    ModelInfo("resnet18", "torchvision's resnet18(weights=None, zero_init_residual=True), channels-last",
              "synthetic 3x224x224 images, 1,000 classes", "3x32x32 images, 10 classes",
              False, (16, 32, CHAPTER_BATCH_SIZE), "SGD lr 0.01 momentum 0.9", "cross-entropy"),
    ModelInfo("resnet50", "torchvision's resnet50(weights=None, zero_init_residual=True), channels-last",
              "synthetic 3x224x224 images, 1,000 classes", "3x32x32 images, 10 classes",
              False, (16, 32, CHAPTER_BATCH_SIZE), "SGD lr 0.01 momentum 0.9", "cross-entropy"),
    ModelInfo("transformer", "a GPT-style decoder: token and position embeddings, causal pre-norm "
              "nn.TransformerEncoder layers (scaled-dot-product attention), LM head",
              "6 layers, d 512, 8 heads, sequence 512, vocabulary 32,000", "2 layers, d 64, 4 heads, sequence 32, "
              "vocabulary 1,000", False, (4, 8, 16), "AdamW lr 3e-4", "cross-entropy over next tokens"),
)
# fmt: on
MODEL_BY_NAME = {info.name: info for info in MODEL_TABLE}
MODELS = tuple(MODEL_BY_NAME)


def is_user_spec(name: str) -> bool:
    """`file.py:build` or `package.module:build`: the user's own model."""
    return ":" in name


def model_info(name: str) -> ModelInfo:
    """The entry of a built-in model, or the generic entry of a user spec."""
    if name in MODEL_BY_NAME:
        return MODEL_BY_NAME[name]
    if is_user_spec(name):
        return ModelInfo(name, "the user's model", "as built", "as built", False, (16, CHAPTER_BATCH_SIZE),
                         "its own, else SGD lr 0.01", "its own, else by the targets")  # fmt: skip
    raise KeyError(f"unknown model {name!r} ({', '.join(MODELS)}, or file.py:function)")


def check_model_name(name: str) -> str:
    """A model of `--models`: a built-in name, or a spec `where:function` with both parts given."""
    if name in MODEL_BY_NAME:
        return name
    if is_user_spec(name):
        where, _, function = name.rpartition(":")
        if where and function.isidentifier():
            return name
        raise UsageError(
            f"--models {name!r}: a model of your own is given as path/to/file.py:function or "
            "package.module:function",
            hint="e.g. --models examples/my_model.py:build",
        )
    raise UsageError(
        f"--models: unknown model {name!r}",
        hint=f"choose from {', '.join(MODELS)}, or give your own as file.py:function",
    )


def cannot_run(model: str, workload_name: str) -> str | None:
    """Why `model` cannot run a workload (None: it can): epochs and training need the data set."""
    if workload(workload_name).timing is Timing.ROUNDS or model_info(model).has_dataset:
        return None
    return f"{model} trains on synthetic data: {workload_name} needs a data set (mlp, cnn and lstm have one)"


def model_size() -> str:
    """`full` or `tiny`, from BENCH_MODEL_SIZE (unset: full)."""
    value = (env_text(SIZE_ENV) or "full").strip().lower() or "full"
    if value not in SIZES:
        raise UsageError(
            f"environment variable {SIZE_ENV}={value!r} is not a model size",
            hint=f"{SIZE_ENV} is full (the default) or tiny (every built-in model at its small test size)",
        )
    return value
