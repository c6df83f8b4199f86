"""What a step costs the GPU in launches: the kernels it runs, and the device's own per-kernel floor.

On a GPU, ATen ops times the host-measured floor cannot judge every mode: a CUDA graph replays
twenty kernels as one or two ops, and compiled code launches Triton kernels no dispatch sees. So
the kernels one step launches are counted by the profiler (once, untimed), and a device-side floor
is measured: a graph of many one-element kernels, replayed with the host out of the way and timed
with events. The overhead verdict takes the larger of the two explanations
(`bench.analysis.metrics.overhead_share`). On the CPU neither exists and nothing changes.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

FLOOR_KERNELS = 500  # kernels in the floor's graph
FLOOR_REPLAYS = 5


def count_kernels(call: Callable[[], Any], device: torch.device | str) -> int | None:
    """The kernels, copies and fills one call puts on the GPU, by the profiler; None on the CPU or
    where the profiler cannot see the device (it needs CUPTI)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CUDA]) as profiler:
            call()
            torch.cuda.synchronize(device)
    except RuntimeError:  # no CUPTI in this build or driver: not knowable here
        return None
    count = sum(1 for event in profiler.events() if event.device_type == DeviceType.CUDA)
    return count or None


def kernel_floor(device: torch.device | str) -> float | None:
    """Seconds per kernel the GPU itself needs between two tiny kernels: a graph of FLOOR_KERNELS
    in-place one-element adds, replayed; the median over FLOOR_REPLAYS replays. None on the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    with torch.cuda.device(device):
        value = torch.ones(1, device=device)
        value.add_(1)  # the kernel's first launch, outside the capture
        torch.cuda.synchronize(device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(FLOOR_KERNELS):
                value.add_(1)
        graph.replay()  # the first replay uploads the graph
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        per_kernel = []
        for _ in range(FLOOR_REPLAYS):
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            per_kernel.append(start.elapsed_time(end) / 1000 / FLOOR_KERNELS)
        del graph
    return statistics.median(per_kernel)
