"""What the hardware can do, measured on the device in the same run, and what a case's work is.

The counting rule (`catalog.COUNTING_RULE`): the matmul work the step really does. For the chapter's
MLP it is exact from its shapes (below); for every other model torch's FlopCounterMode counts it once
per model and batch shape (`counted_flops_per_sample`), which applies the same rule to every matmul,
convolution and attention it dispatches. A linear layer of
`m × n` weights does 2·m·n FLOPs per sample forward; backward, 2·m·n for its weight gradient and
2·m·n for its input gradient, except the first layer, whose input is the data (autograd computes no
gradient for it). Biases, ReLU, the loss and the SGD update are not counted. For the chapter's MLP
(784·64 + 64·10 = 50,816 weights) that is 101,632 FLOPs per sample forward and 204,544 for a
training step. (MFU's 6-per-weight rule would count 304,896, 1.49 times what the step computes.)

The limit is measured, never taken from a datasheet: the best throughput of a large square matmul
in each precision the run uses (`measure_peaks`), and the per-op floor, the time of the smallest op
the device runs. A step whose op count times that floor explains most of its time is bound by
per-op overhead; otherwise by arithmetic (`bench.analysis.metrics.verdict`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from bench.core.results import Peaks
from bench.measure.devices import device_clock, synchronize
from bench.measure.kernels import kernel_floor
from bench.measure.mlp import Net
from bench.measure.model import preserved

MATMUL_SIZES = {"cpu": (512, 4096), "cuda": (4096, 16384)}  # smallest and largest side tried
MATMUL_MIN_S = 0.02  # the matmul grows until one takes this long
PEAK_BUDGET_S = 0.4  # timing per precision, after the size is found
FLOOR_OPS = 2000


def flops_per_sample(net: nn.Module, backward: bool) -> int:
    """The matmul FLOPs one sample costs: forward only, or a training step (forward and backward).

    Forward, 2·m·n per m×n layer; backward, 2·m·n for its weight gradient and 2·m·n for its input
    gradient, except the first layer's: its input is the data, whose gradient autograd never computes.
    """
    layers = [
        module.in_features * module.out_features for module in net.modules() if isinstance(module, nn.Linear)
    ]
    forward = 2 * sum(layers)
    if not backward:
        return forward
    return forward + 2 * sum(layers) + 2 * sum(layers[1:])


def counted_flops_per_sample(
    training: Any, inputs: torch.Tensor, labels: torch.Tensor, backward: bool
) -> int:
    """A case's FLOPs per sample: the MLP's exact count (`flops_per_sample`), any other model's counted
    once on its batch by `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention),
    untimed, its weights and buffers put back afterwards."""
    if isinstance(training.net, Net):
        return flops_per_sample(training.net, backward)
    from torch.utils.flop_counter import FlopCounterMode

    steps: list[tuple[nn.RNNBase, int]] = []  # each recurrent layer's steps (sequence length) per call
    hooks = [
        module.register_forward_hook(
            lambda m, args, _out: steps.append((m, args[0].shape[1 if m.batch_first else 0]))
        )
        for module in training.net.modules()
        if isinstance(module, nn.RNNBase)
    ]
    try:
        with preserved(training), FlopCounterMode(display=False) as counter:
            if backward:
                training.forward_backward(inputs, labels)
            else:  # with autograd on: without it nn.TransformerEncoder takes a fused fast path whose
                training.forward(inputs)  # matmuls FlopCounterMode cannot see (the math is the same)
    finally:
        for hook in hooks:
            hook.remove()
    training.optimizer.zero_grad(set_to_none=True)
    synchronize_all()
    recurrent = sum(recurrent_flops(module, length, backward) for module, length in steps)
    return round(counter.get_total_flops() / max(len(inputs), 1)) + recurrent


GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def recurrent_flops(module: nn.RNNBase, length: int, backward: bool) -> int:
    """FLOPs per sample of a recurrent layer stack over `length` steps, which FlopCounterMode does not
    count (its fused kernels have no formula there), by the counting rule: per step, layer and
    direction, forward 2·gates·hidden·(input + hidden); backward the same for the weight gradients,
    2·gates·hidden·hidden for the gradient to the previous state, and 2·gates·hidden·input for the
    input's gradient except the first layer's (its input is the data)."""
    gates, hidden = GATES.get(module.mode, 1), module.hidden_size
    directions = 2 if module.bidirectional else 1
    total = 0
    for layer in range(module.num_layers):
        width = module.input_size if layer == 0 else hidden * directions
        forward = 2 * gates * hidden * (width + hidden)
        total += forward
        if backward:
            total += forward + 2 * gates * hidden * hidden + (2 * gates * hidden * width if layer else 0)
    return total * directions * length


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops += 1
        return func(*args, **(kwargs or {}))


def count_ops(call: Callable[[], Any]) -> int:
    """The ATen operations one call dispatches: what each pays the per-op floor for (untimed)."""
    with _OpCounter() as counter:
        call()
    synchronize_all()
    return counter.ops


def synchronize_all() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextmanager
def precision(name: str) -> Iterator[None]:
    """TF32 matmuls allowed inside (`tfloat32`); the flag is restored afterwards."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = name == "tfloat32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def matmul_peak(device: torch.device | str, name: str) -> tuple[float, int]:
    """(FLOP/s, side): the best of many timed square matmuls, the side grown until one is long enough."""
    device = torch.device(device)
    dtype = torch.bfloat16 if name == "bfloat16" else torch.float32
    smallest, largest = MATMUL_SIZES["cuda" if device.type == "cuda" else "cpu"]
    clock = device_clock(device)
    side = smallest
    with precision(name):
        while True:
            a = torch.randn(side, side, device=device).to(dtype)
            b = torch.randn(side, side, device=device).to(dtype)
            a @ b  # first call: library start-up
            start = clock()
            a @ b
            once = clock() - start
            if once >= MATMUL_MIN_S or side >= largest:
                break
            side *= 2
        best = once
        spent = 0.0
        while spent < PEAK_BUDGET_S:
            start = clock()
            a @ b
            elapsed = clock() - start
            best, spent = min(best, elapsed), spent + elapsed
    return 2 * side**3 / best, side


def op_floor(device: torch.device | str) -> float:
    """Seconds of the smallest op: a one-element add (its output allocated, as a step's ops are),
    back to back, waited for once per block; the median over five blocks."""
    device = torch.device(device)
    clock = device_clock(device)
    a, b = torch.ones(1, device=device), torch.ones(1, device=device)
    for _ in range(100):
        a + b
    blocks = []
    for _ in range(5):
        start = clock()
        for _ in range(FLOOR_OPS // 5):
            a + b
        blocks.append((clock() - start) / (FLOOR_OPS // 5))
    return statistics.median(blocks)


def precisions_for(device: torch.device | str, modes: tuple[str, ...]) -> tuple[str, ...]:
    """The precisions a run's modes use on a device: float32 always, bf16 and TF32 where asked."""
    names = ["float32"]
    if "bf16" in modes:
        names.append("bfloat16")
    if "tf32" in modes and torch.device(device).type == "cuda":
        names.append("tfloat32")
    return tuple(names)


def measure_peaks(device: torch.device | str, names: tuple[str, ...] = ("float32",)) -> Peaks:
    """The device's own limits: matmul FLOP/s per precision (and the side used), and the per-op floor."""
    peaks: dict[str, Any] = {}
    for name in names:
        flops, side = matmul_peak(device, name)
        peaks[name] = flops
        peaks[f"{name}_matmul_side"] = side
    peaks["op_floor_s"] = op_floor(device)
    peaks["kernel_floor_s"] = kernel_floor(device)
    synchronize(device)
    release_cached_memory(device)
    return Peaks(**peaks)


def release_cached_memory(device: torch.device | str) -> None:
    """Hands the caching allocator's free blocks back to the driver. The peak probe's largest matmul
    leaves several GiB cached on a GPU (three 16384² float32 matrices are 3 GiB); kept, the first case
    measured after it would report them as its own reserved memory and NVML use."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
