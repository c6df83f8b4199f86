"""Host and device memory readings of a case."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.memory import MemoryMonitor, kernel_peak_rss
from tests.conftest import ROOT, requires_cuda

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


# Run in a fresh interpreter: late in a long pytest session the allocator can serve the block from
# memory the process already holds, and then neither RSS nor its peak moves (seen in CI).
PEAK_RESET_SCRIPT = """
import json, psutil, torch
from bench.memory import kernel_peak_rss, reset_peak_rss
MIB = 2**20
if not reset_peak_rss():
    print(json.dumps(None)); raise SystemExit
before = psutil.Process().memory_info().rss
block = torch.ones(64 * MIB, dtype=torch.uint8)
with_block = kernel_peak_rss()
del block
reset = reset_peak_rss()
mark, resident = kernel_peak_rss(), psutil.Process().memory_info().rss
print(json.dumps(dict(before=before, with_block=with_block, reset=reset, mark=mark, resident=resident)))
"""


def test_the_kernel_peak_mark_resets(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RESET_SCRIPT],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    readings = json.loads(result.stdout)
    if readings is None:
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    assert readings["with_block"] >= readings["before"] + 60 * MIB, readings
    assert readings["reset"]
    # the mark now starts from the RSS of that moment: the freed block's peak is forgotten, and the
    # mark is not below what is resident (the kernel's RSS counters may lag by a few pages per thread)
    assert readings["mark"] < readings["with_block"] - 32 * MIB, readings
    assert readings["mark"] >= readings["resident"] - 4 * MIB, readings
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
