"""Execution modes: the same model, loss, optimizer and data, run another way.

A mode builds the training object every workload calls (`forward`, `forward_backward`, `step`), so
any workload runs in any mode without knowing it; a mode may also need a context around the whole
case (TF32 flags) and may not run on a device at all (`unsupported` gives the reason, and the case
becomes a `skipped` cell). The modes:

* `eager`: the chapter's code.
* `compile`: `torch.compile` of the whole training step (forward, loss, backward, SGD step), and of
  the forward alone for `forward`. The first call of each shape compiles; it is timed apart
  (`compile_s`) and made before the clock starts. Recompilations during timing are counted. On a
  GPU, `x + 1` is compiled once first (`compile_probe`): where Triton cannot build its kernels, every
  compile case is a `skipped` cell with the reason.
* `fused`: SGD with `fused=True` (one kernel for the update).
* `bf16`: `torch.autocast` to bfloat16 for the forward and the loss.
* `tf32`: CUDA only; TF32 matmuls allowed for the case.
* `cuda-graph`: CUDA only; each step (optimizer included) captured once per batch shape with
  `torch.cuda.graph` on static input buffers and replayed, each batch copied into those buffers.

Validation (`validate_loss`): from the same seed and the same batches, a mode's loss after a few
hundred steps must lie within its stated tolerance of eager's; a mode that fails is an `invalid`
cell, never a number in the throughput table.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from bench.core.catalog import CHAPTER_BATCH_SIZE, MODES
from bench.core.errors import one_line
from bench.core.models import DEFAULT_MODEL, model_info
from bench.measure.data import Dataset
from bench.measure.devices import synchronize
from bench.measure.efficiency import precision
from bench.measure.loaders import ResidentBatches
from bench.measure.model import Training, build_training
from bench.measure.wrapped import AutocastTraining, CompiledTraining, GraphedTraining

Batch = tuple[torch.Tensor, torch.Tensor]

VALIDATION_STEPS = 200
SYNTHETIC_VALIDATION_STEPS = 20  # a model without the data set trains on its one batch: fewer, costlier steps
VALIDATION_SEED = 7


# --- the modes -----------------------------------------------------------------------------------


def _cuda_only(device: torch.device) -> str | None:
    return None if device.type == "cuda" else "CUDA only"


def _compile_support(device: torch.device) -> str | None:
    if device.type == "cpu":
        compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
        if compiler is None:
            return "torch.compile on the CPU needs a C++ compiler (g++), and this machine has none"
        return None
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        pass
    else:
        if not has_triton():
            return "torch.compile on a GPU needs Triton, which this install lacks"
    return compile_probe(device)


COMPILE_PROBES: dict[str, str | None] = {}  # device -> why torch.compile does not run there (None: it does)
TRITON_NEEDS = "Triton builds its launcher on first use: it needs a C compiler, Python.h and libcuda.so.1"


def compile_probe(device: torch.device) -> str | None:
    """Whether torch.compile builds and runs a kernel on `device`, tried once per device and process:
    `x + 1` compiled and checked. Triton is importable long before it can build anything (its launcher
    is compiled at the first kernel), so without this a missing compiler or header failed every compile
    case separately, minutes into the run; with it they are `skipped` cells with this reason."""
    name = str(device)
    if name not in COMPILE_PROBES:
        COMPILE_PROBES[name] = _try_compile(device)
    return COMPILE_PROBES[name]


def _try_compile(device: torch.device) -> str | None:
    try:
        x = torch.arange(4, dtype=torch.float32, device=device)
        result = torch.compile(lambda t: t + 1)(x)
        synchronize(device)
        if not torch.equal(result.cpu(), torch.arange(1, 5, dtype=torch.float32)):
            return f"torch.compile of x + 1 on {device} computed {result.cpu().tolist()}, not [1, 2, 3, 4]"
    except Exception as error:
        return f"torch.compile of x + 1 fails on {device}: {one_line(error, 300)} ({TRITON_NEEDS})"
    return None


def _fused_support(device: torch.device) -> str | None:
    try:
        parameter = torch.nn.Parameter(torch.zeros(4, device=device))
        parameter.grad = torch.ones(4, device=device)
        torch.optim.SGD([parameter], lr=0.1, fused=True).step()
        synchronize(device)
    except Exception as error:
        return f"SGD(fused=True) does not run on {device.type} in this build: {one_line(error, 200)}"
    return None


def _bf16_support(device: torch.device) -> str | None:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU does not support bfloat16"
    return None


def _tf32_support(device: torch.device) -> str | None:
    return _cuda_only(device) or (
        None
        if torch.cuda.get_device_capability(device)[0] >= 8
        else "TF32 needs compute capability 8.0 or newer"
    )


@dataclass(frozen=True)
class Mode:
    """One way to run the same training. `loss_tolerance`: relative, against eager, after the validation steps."""

    name: str
    build: Callable[..., Any]  # (device, seed, model=..., batch_size=...) -> the training object
    unsupported: Callable[[torch.device], str | None] = lambda device: None
    loss_tolerance: float = 1e-3
    context: Callable[[], AbstractContextManager[Any]] = nullcontext


def _eager(device: torch.device, seed: int, **model: Any) -> Training:
    return build_training(device, seed, **model)


# fmt: off
IMPLEMENTATIONS: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode("eager", _eager),
        Mode("compile", lambda d, s, **m: CompiledTraining(build_training(d, s, **m)), _compile_support, 1e-3),
        Mode("fused", lambda d, s, **m: build_training(d, s, fused=True, **m), _fused_support, 1e-3),
        Mode("bf16", lambda d, s, **m: build_training(d, s, kind=AutocastTraining, **m), _bf16_support, 3e-2),
        Mode("tf32", _eager, _tf32_support, 1e-2, context=lambda: precision("tfloat32")),
        Mode("cuda-graph", lambda d, s, **m: GraphedTraining(build_training(d, s, **m)), _cuda_only, 1e-3),
    )
}
# fmt: on
assert tuple(IMPLEMENTATIONS) == MODES, "bench.catalog.MODES names the modes implemented here"


def mode(name: str) -> Mode:
    return IMPLEMENTATIONS[name]


def build(
    name: str,
    device: torch.device | str,
    seed: int = 0,
    model: str = DEFAULT_MODEL,
    batch_size: int = CHAPTER_BATCH_SIZE,
) -> Any:
    """The training object of mode `name` for `model` (its own example at `batch_size`): what every
    workload calls."""
    return IMPLEMENTATIONS[name].build(torch.device(device), seed, model=model, batch_size=batch_size)


def unsupported(name: str, device: torch.device | str) -> str | None:
    """Why `device` cannot run mode `name` (None: it can); never raises."""
    try:
        return IMPLEMENTATIONS[name].unsupported(torch.device(device))
    except Exception as error:
        return f"cannot tell whether {device} runs {name}: {one_line(error, 200)}"


def compiled_graphs() -> int:
    """How many graphs torch.compile has built in this process (a rise during timing is a recompile)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


# --- validation ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossCheck:
    """A mode's mean loss over the last validation steps against eager's, from the same seed and batches.

    `scale`: what the difference is relative to; None: eager's loss. A model trained over and over on
    its one synthetic batch drives that loss towards zero, where any rounding is a large relative
    difference: there it is eager's first loss, the size of what training removed.
    """

    loss: float
    eager_loss: float
    tolerance: float
    steps: int
    scale: float | None = None

    @property
    def difference(self) -> float:
        scale = abs(self.scale if self.scale is not None else self.eager_loss)
        return abs(self.loss - self.eager_loss) / scale if scale else float("inf")

    @property
    def passed(self) -> bool:
        return self.difference <= self.tolerance


def _batches(training: Any, dataset: Dataset, batch_size: int, device: torch.device | str) -> Iterator[Batch]:
    """The validation's batches: the data set's, shuffled from a fixed seed, or the model's own example
    over and over. The ragged last batch of each epoch is left out where there are full ones: for
    cuda-graph it was a second capture and for compile a recompile, for a check that needs one shape."""
    if training.example is not None:
        while True:
            yield training.example
    batches = ResidentBatches(dataset.train_images, dataset.train_labels, device, seed=VALIDATION_SEED)
    whole = len(dataset.train_labels) >= batch_size
    while True:
        for inputs, labels in batches.batches(batch_size):
            if not whole or len(labels) == batch_size:
                yield inputs, labels


def validation_steps(model: str) -> int:
    """Steps of a loss check: VALIDATION_STEPS on the data set, fewer on a synthetic model's one batch."""
    return VALIDATION_STEPS if model_info(model).has_dataset else SYNTHETIC_VALIDATION_STEPS


def validation_losses(
    name: str,
    device: torch.device | str,
    dataset: Dataset,
    batch_size: int,
    steps: int = VALIDATION_STEPS,
    model: str = DEFAULT_MODEL,
) -> float:
    """The mean loss of the last steps (ten, or a quarter) of `steps` training steps of mode `name`,
    seed and batches fixed."""
    return _losses(name, device, dataset, batch_size, steps, model)[0]


def _losses(
    name: str, device: torch.device | str, dataset: Dataset, batch_size: int, steps: int, model: str
) -> tuple[float, float]:
    """(the mean loss of the last steps, the first step's loss) of mode `name`, seed and batches fixed."""
    training = build(name, device, seed=0, model=model, batch_size=batch_size)
    last = min(10, max(1, steps // 4))
    losses: list[torch.Tensor] = []
    with IMPLEMENTATIONS[name].context():
        for done, (inputs, labels) in enumerate(_batches(training, dataset, batch_size, device), start=1):
            loss = training.step(inputs, labels)
            if done == 1 or done > steps - last:
                losses.append(loss.detach().float().clone())
            if done >= steps:
                break
    return statistics.fmean(float(value) for value in losses[-last:]), float(losses[0])


def validate_loss(
    name: str,
    device: torch.device | str,
    dataset: Dataset,
    batch_size: int,
    steps: int | None = None,
    model: str = DEFAULT_MODEL,
) -> LossCheck:
    """Eager and mode `name` trained side by side from the same seed on the same batches."""
    steps = steps or validation_steps(model)
    eager, first = _losses("eager", device, dataset, batch_size, steps, model)
    other = validation_losses(name, device, dataset, batch_size, steps, model)
    scale = None if model_info(model).has_dataset else first
    return LossCheck(other, eager, IMPLEMENTATIONS[name].loss_tolerance, steps, scale)
