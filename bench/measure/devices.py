"""Device names: parse and validate them before anything is measured, and a clock that waits for them.

CUDA kernels run asynchronously, so a host clock read without a device wait measures launches, not
work. `device_clock` waits for the device before reading the clock; timing a loop of N calls with
one such read at each end keeps the wait out of the per-call cost. What a read itself costs (a
synchronization on a GPU) is measured per device (`clock_overhead`), and rounds are made long enough
that it stays below `SYNC_SHARE_BOUND` of a round (`min_round_s`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import torch

from bench.core.errors import UsageError

SUPPORTED = "cpu, cuda (every visible GPU), cuda:N"
MIN_ROUND_S = 1e-3  # a timed round lasts at least 1 ms, so a device wait is paid once per many small calls
SYNC_SHARE_BOUND = 0.01  # the clock's own cost stays below 1% of a round


def visible_cuda_devices() -> list[str]:
    """Names of the CUDA devices torch can use here, `cuda:0` first; empty without a usable GPU."""
    if not torch.cuda.is_available():
        return []
    return [f"cuda:{index}" for index in range(torch.cuda.device_count())]


def default_devices() -> list[str]:
    """The CPU plus every visible CUDA device: what a run measures when no device is named."""
    return ["cpu", *visible_cuda_devices()]


def no_cuda_reason() -> str:
    """Why torch sees no CUDA device, in words a person can act on."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    if not torch.cuda.is_available():
        return "torch is a CUDA build but finds no usable GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them)"
    return "no CUDA device is visible"


def parse_devices(text: str | Iterable[str]) -> list[str]:
    """Turns `cpu,cuda:0` or `cuda` into validated canonical names, in the order given, without repeats.

    Raises UsageError naming the bad entry and what exists here, so a typo costs a second.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for raw in items:
        item = raw.strip().lower()
        if not item:
            continue
        for name in _expand(item):
            if name not in names:
                names.append(name)
    if not names:
        raise UsageError("no device given", hint=f"use one or more of: {SUPPORTED}")
    return names


def _expand(item: str) -> list[str]:
    if item == "cpu":
        return ["cpu"]
    if item == "cuda" or item.startswith("cuda:"):
        visible = visible_cuda_devices()
        if not visible:
            raise UsageError(
                f"device {item!r} is not available: {no_cuda_reason()}",
                hint="run `bench check` for details, or use --devices cpu",
            )
        if item == "cuda":
            return visible
        index_text = item.removeprefix("cuda:")
        if not index_text.isdigit():
            raise UsageError(f"device {item!r} is not a valid name", hint=f"use one of: {SUPPORTED}")
        name = f"cuda:{int(index_text)}"
        if name not in visible:
            raise UsageError(
                f"device {item!r} does not exist: this machine has {len(visible)} CUDA device(s) "
                f"({', '.join(visible)})",
                hint="pick one of those, or `cuda` for all of them",
            )
        return [name]
    raise UsageError(f"unknown device {item!r}", hint=f"supported devices: {SUPPORTED}")


def synchronize(device: torch.device | str) -> None:
    """Waits until all work queued on `device` is done; a no-op on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_clock(device: torch.device | str) -> Callable[[], float]:
    """A `perf_counter` that first waits for `device`: the timer pytest-benchmark calls around a round."""
    device = torch.device(device)
    if device.type != "cuda":
        return time.perf_counter

    def clock() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    clock.__name__ = f"perf_counter_after_sync_{device.type}{device.index or 0}"
    return clock


def clock_overhead(device: torch.device | str, reads: int = 201) -> float:
    """What one read of `device_clock` costs on an idle device: the median gap between two reads.

    A round's time carries this cost once (the wait at its end, after the work is done).
    """
    clock = device_clock(device)
    synchronize(device)
    gaps = []
    for _ in range(reads):
        start = clock()
        gaps.append(clock() - start)
    return statistics.median(gaps)


def min_round_s(overhead_s: float) -> float:
    """The shortest round that keeps a clock read below `SYNC_SHARE_BOUND` of it (at least 1 ms)."""
    return max(MIN_ROUND_S, overhead_s / SYNC_SHARE_BOUND)


_SIDE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def side_stream(device: torch.device | str) -> torch.cuda.Stream:
    """The one side stream of a CUDA device, for every graph capture's warm-up.

    cuBLAS keeps a handle and a workspace per stream (about 32 MiB on Hopper): a new stream per
    capture would add one to every cuda-graph case's memory and none of it would be the model's.
    """
    device = torch.device(device)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    stream = _SIDE_STREAMS.get(device)
    if stream is None:
        stream = _SIDE_STREAMS[device] = torch.cuda.Stream(device)
    return stream


def _warm_blas(device: torch.device) -> None:
    """A linear layer with bias, forward and backward, in float32 and under bf16 autocast: the cuBLAS
    and cuBLASLt (bias epilogue) handles and workspaces every model's layers then reuse."""
    weights = torch.ones(64, 64, device=device, requires_grad=True)
    bias = torch.zeros(64, device=device, requires_grad=True)
    inputs = torch.ones(8, 64, device=device)
    torch.nn.functional.linear(inputs, weights, bias).sum().backward()
    (weights @ weights).sum().backward()
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            torch.nn.functional.linear(inputs, weights, bias).float().sum().backward()


def prepare_device(device: torch.device | str) -> None:
    """Pays a device's one-time start-up before any case: CUDA context, cuBLAS and cuBLASLt handles
    and workspaces, on the default stream and on the side stream graph captures warm up on.

    cuBLAS workspaces come from the caching allocator and stay for the life of the process; created
    here, they are part of every case's baseline instead of the first case's own peak.
    """
    device = torch.device(device)
    _warm_blas(device)
    if device.type == "cuda":
        side, current = side_stream(device), torch.cuda.current_stream(device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            _warm_blas(device)
        current.wait_stream(side)
    synchronize(device)
