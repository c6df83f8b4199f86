"""The table of workloads, and the names shared by measuring and reporting code.

Kept free of torch, so that `bench report`, `bench compare`, `--help` and the checks of option
values start in a fraction of a second.

A workload is defined here once: what it times, how it is measured (`timing`), which variants it
plans (`variants`: the option whose values become its loaders) and the callable it times (`step`:
a name in `bench.measure.workloads.STEPS`, for workloads timed in rounds). Planning, measuring and
reporting read this table instead of branching on workload names, so a new workload is one entry
here (and its step function, if it is timed in rounds).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Named(str, Enum):
    """An enumeration stored and shown as its plain value (`ok`, `rounds`), in JSON and in text alike."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Timing(Named):
    """How a workload is measured: pytest-benchmark rounds of a step, timed epochs, or training runs."""

    ROUNDS = "rounds"
    EPOCHS = "epochs"
    RUNS = "runs"


class Status(Named):
    """What became of a case: measured (`ok`), or why not."""

    OK = "ok"
    OOM = "oom"
    ERROR = "error"
    SKIPPED = "skipped"
    INVALID = "invalid"  # measured, but it computes something else than its reference


FAILED_STATUSES = (Status.OOM, Status.ERROR)  # attempted and broke: the run's exit status counts these
STOPPING_STATUSES = (Status.OOM, Status.ERROR, Status.SKIPPED)  # a case in one of these is not tried again
ROUNDS, EPOCHS, RUNS = Timing.ROUNDS, Timing.EPOCHS, Timing.RUNS


@dataclass(frozen=True)
class Workload:
    """One kind of timed work on the chapter's model."""

    name: str
    what: str  # what is timed, in a sentence (help text, README)
    timing: Timing
    variants: str | None = None  # the option listing this workload's loaders, or None
    step: str | None = None  # ROUNDS only: the key of its callable in bench.measure.workloads.STEPS
    backward: bool = True  # whether a step includes a backward pass (FLOP counting)
    parallel: bool = False  # runs across processes (--nproc): data-parallel, and side by side unless RUNS

    @property
    def in_rounds(self) -> bool:
        return self.timing == ROUNDS


# fmt: off
WORKLOAD_TABLE = (
    Workload("forward", "eval mode, no grad, one fixed batch already on the device", ROUNDS,
             step="forward", backward=False),
    Workload("forward_backward", "gradients set to none, forward, loss and backward", ROUNDS,
             step="forward_backward"),
    Workload("train_step", "the chapter's loop body: zero_grad, forward, loss, backward, SGD step", ROUNDS,
             step="train_step", parallel=True),
    Workload("epoch", "a full pass over the training set through one loader", EPOCHS, variants="loaders",
             parallel=True),
    Workload("train", "the chapter's training run, test accuracy after every epoch", RUNS,
             variants="train_loader", parallel=True),
)
# fmt: on
WORKLOAD_BY_NAME = {workload.name: workload for workload in WORKLOAD_TABLE}
WORKLOADS = tuple(WORKLOAD_BY_NAME)
PARALLEL_WORKLOADS = tuple(w.name for w in WORKLOAD_TABLE if w.parallel)

LOADERS = ("torchvision", "resident")
MODES = ("eager", "compile", "fused", "bf16", "tf32", "cuda-graph")  # implemented in bench.measure.modes
PRECISIONS = ("float32", "bfloat16", "tfloat32")  # the matmul peaks a run may measure
MODE_PRECISION = {"bf16": "bfloat16", "tf32": "tfloat32"}  # the measured peak a mode is set against


# Efficiency: how work is counted and judged (bench.measure.efficiency measures, bench.analysis judges)
COUNTING_RULE = (
    "the matmul work the step does: 2·m·n per sample forward for every m×n linear layer; backward 2·m·n "
    "for its weight gradient and 2·m·n for its input gradient, but none for the first layer's input (the "
    "data); biases, ReLU, loss and optimizer not counted; for models other than the MLP, torch's "
    "FlopCounterMode counts every matmul, convolution and attention of the step the same way"
)
# `compute-bound` needs evidence: the step reaches this share of the device's measured matmul peak
COMPUTE_BOUND_SHARE = 0.4
OVERHEAD_SHARE = (
    0.5  # a step whose op count times the per-op floor explains this much of it is overhead-bound
)
ENERGY_MIN_WINDOW_S = 1.0  # energy is reported for timed work at least this long


def precision_of(mode: str) -> str:
    return MODE_PRECISION.get(mode, "float32")


DATASETS = ("auto", "mnist", "fashion-mnist", "synthetic")
DATASET_NAMES = {  # how each data set is called where people read it
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "synthetic": "synthetic",
    "idx": "IDX files",
}
DATA_DIR_ENV = "BENCH_DATA_DIR"
GC_POLICY = "garbage collected before, and the collector off during, every timed round and epoch"
CHAPTER_BATCH_SIZE = 64
MIB = 2**20


def workload(name: str) -> Workload:
    """The table entry of `name`; a KeyError names the known workloads."""
    try:
        return WORKLOAD_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown workload {name!r} ({', '.join(WORKLOADS)})") from None


def dataset_display_name(name: str | None) -> str:
    return DATASET_NAMES.get(name or "", name or "?")
