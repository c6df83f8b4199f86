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
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from bench.core.catalog import MODES
from bench.core.errors import one_line
from bench.measure.data import Dataset
from bench.measure.devices import side_stream, synchronize
from bench.measure.efficiency import precision
from bench.measure.loaders import ResidentBatches
from bench.measure.model import Training, build_training, preserved

VALIDATION_STEPS = 200
VALIDATION_SEED = 7


class AutocastTraining(Training):
    """The forward and the loss under `torch.autocast` to bfloat16; backward and update as usual."""

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return super().forward(inputs)

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return super().loss(inputs, labels)


class CompiledTraining:
    """The chapter's training compiled with `torch.compile`; the first call of each shape is the compile."""

    def __init__(self, base: Training) -> None:
        # Dynamo keeps its compiled code per code object, and every Training's `step` shares one: after
        # 8 instances (its recompile limit) it would run the 9th in eager without a word, and "compile"
        # would time eager. Each instance starts from empty in-memory caches (the on-disk caches keep a
        # recompile short), and a limit hit all the same is an error, never a silent fallback.
        torch._dynamo.reset()
        if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"):  # torch 2.6 and newer
            torch._dynamo.config.fail_on_recompile_limit_hit = True
        self.base = base
        self.net, self.device, self.optimizer = base.net, base.device, base.optimizer
        self.compile_s = 0.0
        self._compiled: dict[str, Callable[..., torch.Tensor]] = {
            "forward": torch.compile(base.forward),
            "forward_backward": torch.compile(base.forward_backward),
            "step": torch.compile(base.step),
        }
        self._seen: set[tuple[Any, ...]] = set()

    def _call(self, name: str, *tensors: torch.Tensor) -> torch.Tensor:
        shape = (name, torch.is_grad_enabled(), *(tuple(t.shape) for t in tensors))
        if shape in self._seen:
            return self._compiled[name](*tensors)
        start = time.perf_counter()
        result = self._compiled[name](*tensors)
        synchronize(self.device)
        self.compile_s += time.perf_counter() - start
        self._seen.add(shape)
        return result

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._call("forward", inputs)

    def forward_backward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._call("forward_backward", inputs, labels)

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._call("step", inputs, labels)


class GraphedTraining:
    """Each call captured once per batch shape as a CUDA graph on static buffers, then replayed.

    Capture follows PyTorch's whole-network recipe: warm-up iterations on a side stream (their
    effect on the weights undone), gradients set to none, then the step (loss, backward, SGD
    update) recorded; replay writes fresh gradients and updates the weights in place.
    """

    WARMUP = 3

    def __init__(self, base: Training) -> None:
        self.base = base
        self.net, self.device, self.optimizer = base.net, base.device, base.optimizer
        self.compile_s = 0.0  # capture time, reported like compilation
        self._graphs: dict[
            tuple[Any, ...], tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]
        ] = {}

    def _replay(self, name: str, body: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
        key = (name, torch.is_grad_enabled(), *(tuple(t.shape) for t in tensors))
        entry = self._graphs.get(key)
        if entry is None:
            start = time.perf_counter()
            entry = self._graphs[key] = self._capture(body, tensors)
            self.compile_s += time.perf_counter() - start
        graph, static, output = entry
        for buffer, tensor in zip(static, tensors, strict=True):
            buffer.copy_(tensor, non_blocking=True)
        graph.replay()
        return output

    def _capture(
        self, body: Callable[..., torch.Tensor], tensors: tuple[torch.Tensor, ...]
    ) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]:
        static = [t.detach().clone() for t in tensors]
        with preserved(self.base):
            side = side_stream(self.device)  # one per device: a new one costs a cuBLAS workspace
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP):
                    self.base.optimizer.zero_grad(set_to_none=True)
                    body(*static)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.base.optimizer.zero_grad(set_to_none=True)  # the captured backward writes fresh gradients
            with torch.cuda.graph(graph):
                output = body(*static)
        synchronize(self.device)
        return graph, static, output

    def _update(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.base.loss(inputs, labels)
        loss.backward()
        self.base.optimizer.step()
        return loss

    def _gradients(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.base.loss(inputs, labels)
        loss.backward()
        return loss

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._replay("forward", self.base.forward, inputs)

    def forward_backward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._replay("forward_backward", self._gradients, inputs, labels)

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._replay("step", self._update, inputs, labels)


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
    build: Callable[[torch.device, int], Any]
    unsupported: Callable[[torch.device], str | None] = lambda device: None
    loss_tolerance: float = 1e-3
    context: Callable[[], AbstractContextManager[Any]] = nullcontext


def _eager(device: torch.device, seed: int) -> Training:
    return build_training(device, seed)


IMPLEMENTATIONS: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode("eager", _eager),
        Mode("compile", lambda d, s: CompiledTraining(build_training(d, s)), _compile_support, 1e-3),
        Mode("fused", lambda d, s: build_training(d, s, fused=True), _fused_support, 1e-3),
        Mode("bf16", lambda d, s: build_training(d, s, kind=AutocastTraining), _bf16_support, 3e-2),
        Mode("tf32", _eager, _tf32_support, 1e-2, context=lambda: precision("tfloat32")),
        Mode("cuda-graph", lambda d, s: GraphedTraining(build_training(d, s)), _cuda_only, 1e-3),
    )
}
assert tuple(IMPLEMENTATIONS) == MODES, "bench.catalog.MODES names the modes implemented here"


def mode(name: str) -> Mode:
    return IMPLEMENTATIONS[name]


def build(name: str, device: torch.device | str, seed: int = 0) -> Any:
    """The training object of mode `name`: what every workload calls."""
    return IMPLEMENTATIONS[name].build(torch.device(device), seed)


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
    """A mode's mean loss over the last validation steps against eager's, from the same seed and batches."""

    loss: float
    eager_loss: float
    tolerance: float
    steps: int

    @property
    def difference(self) -> float:
        return abs(self.loss - self.eager_loss) / abs(self.eager_loss) if self.eager_loss else float("inf")

    @property
    def passed(self) -> bool:
        return self.difference <= self.tolerance


def validation_losses(
    name: str, device: torch.device | str, dataset: Dataset, batch_size: int, steps: int = VALIDATION_STEPS
) -> float:
    """The mean loss of the last ten of `steps` training steps of mode `name`, seed and batches fixed."""
    training = build(name, device, seed=0)
    batches = ResidentBatches(dataset.train_images, dataset.train_labels, device, seed=VALIDATION_SEED)
    # The ragged last batch of each epoch is left out where there are full ones: for cuda-graph it was a
    # second capture and for compile a recompile, for a check that needs one shape only.
    whole = len(dataset.train_labels) >= batch_size
    tail: list[torch.Tensor] = []
    done = 0
    with IMPLEMENTATIONS[name].context():
        while done < steps:
            for inputs, labels in batches.batches(batch_size):
                if whole and len(labels) != batch_size:
                    continue
                loss = training.step(inputs, labels)
                done += 1
                if done > steps - 10:
                    tail.append(loss.detach().float().clone())
                if done >= steps:
                    break
    return statistics.fmean(float(value) for value in tail)


def validate_loss(
    name: str, device: torch.device | str, dataset: Dataset, batch_size: int, steps: int = VALIDATION_STEPS
) -> LossCheck:
    """Eager and mode `name` trained side by side from the same seed on the same batches."""
    eager = validation_losses("eager", device, dataset, batch_size, steps)
    other = validation_losses(name, device, dataset, batch_size, steps)
    return LossCheck(other, eager, IMPLEMENTATIONS[name].loss_tolerance, steps)
