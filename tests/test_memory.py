"""Host and device memory readings of a case."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import torch

from bench.memory import MemoryMonitor, kernel_peak_rss, reset_peak_rss
from tests.conftest import requires_cuda

MIB = 2**20


def test_a_short_lived_allocation_shows_in_the_host_peak() -> None:
    """512 MiB touched and freed inside the case: the peak sees it, the RSS at the end does not."""
    with MemoryMonitor("cpu") as monitor:
        block = torch.ones(128 * MIB // 4 * 4, dtype=torch.float32)  # 512 MiB, every page written
        del block
    reading = monitor.reading
    assert reading is not None
    assert reading.host_rss_peak_bytes - reading.host_rss_start_bytes > 400 * MIB
    assert reading.device_peak_allocated_bytes is None and reading.nvml_used_peak_bytes is None


def test_the_kernel_peak_mark_resets(tmp_path: Path) -> None:
    if not reset_peak_rss():
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    before = psutil.Process().memory_info().rss
    block = torch.ones(64 * MIB, dtype=torch.uint8)
    peak_with_block = kernel_peak_rss()
    assert peak_with_block is not None and peak_with_block >= before + 60 * MIB
    del block
    assert reset_peak_rss()
    # the mark now starts from the RSS of this moment: the freed block's peak is forgotten, and the
    # mark is not below what is resident (the kernel's RSS counters may lag by a few pages per thread)
    mark, resident = kernel_peak_rss(), psutil.Process().memory_info().rss
    assert mark is not None and mark < peak_with_block - 32 * MIB, (mark, peak_with_block)
    assert mark >= resident - 4 * MIB, (mark, resident)
    (tmp_path / "status").write_text("Name:\tx\nVmHWM:\t  2048 kB\n")
    assert kernel_peak_rss(tmp_path) == 2048 * 1024


@requires_cuda
def test_device_peaks_on_cuda() -> None:
    with MemoryMonitor("cuda:0") as monitor:
        block = torch.ones(64 * MIB, dtype=torch.uint8, device="cuda:0")
        del block
    reading = monitor.reading
    assert reading is not None and reading.device_peak_allocated_bytes >= 64 * MIB
    assert reading.device_peak_reserved_bytes >= reading.device_peak_allocated_bytes
