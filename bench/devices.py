"""Device names: parse and validate them before anything is measured, and a clock that waits for them.

CUDA kernels run asynchronously, so a host clock read without a device wait measures launches, not
work. `device_clock` waits for the device before reading the clock; timing a loop of N calls with
one such read at each end keeps the wait out of the per-call cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch

from bench.errors import UsageError

SUPPORTED = "cpu, cuda (every visible GPU), cuda:N"


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
