"""Host and device memory readings of a pass: counters read after the work, nothing running beside it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from bench.core.catalog import MIB
from bench.measure.memory import MemoryMonitor, kernel_peak_rss
from tests.conftest import ROOT, cuda_test


def test_a_short_lived_allocation_shows_in_the_host_peak() -> None:
    """512 MiB touched and freed inside the pass: the peak sees it, the RSS at the end does not."""
    with MemoryMonitor("cpu") as monitor:
        block = torch.ones(128 * MIB // 4 * 4, dtype=torch.float32)  # 512 MiB, every page written
        del block
    reading = monitor.reading
    assert reading is not None
    assert reading.host_rss_peak_bytes - reading.host_rss_start_bytes > 400 * MIB
    assert reading.device_peak_allocated_bytes is None and reading.nvml_used_bytes is None


@pytest.mark.parametrize("kernel_mark", [True, False])
def test_no_thread_runs_beside_the_measured_work(tmp_path: Path, kernel_mark: bool) -> None:
    """Neither with the kernel's peak mark nor without it (then RSS is read at the untimed moments)."""
    proc = Path("/proc/self") if kernel_mark else tmp_path  # a /proc without clear_refs: no kernel mark
    before = threading.active_count()
    with MemoryMonitor("cpu", proc=proc) as monitor:
        during = threading.active_count()
        block = torch.ones(64 * MIB, dtype=torch.uint8)
        monitor.sample()  # an untimed moment, as between epochs
        del block
    assert monitor.kernel_peak == kernel_mark
    assert during == before, "a sampling thread ran beside the work"
    assert monitor.reading is not None
    assert monitor.reading.host_rss_peak_bytes >= monitor.reading.host_rss_start_bytes


class FailingDevice(MemoryMonitor):
    """A device whose final read fails as a CUDA fault surfacing at the last synchronize would."""

    def device_peaks(self) -> tuple[int | None, int | None]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_a_fault_found_at_the_end_fails_a_pass_that_raised_nothing() -> None:
    with pytest.raises(RuntimeError, match="illegal memory access"), FailingDevice("cpu"):
        pass  # the pass itself "succeeded": the asynchronous fault must not be saved as ok


def test_the_pass_own_error_wins_over_a_failing_final_read() -> None:
    monitor = FailingDevice("cpu")
    with pytest.raises(ValueError, match="the case broke"), monitor:
        raise ValueError("the case broke")
    assert monitor.reading is not None and monitor.reading.device_peak_allocated_bytes is None


# Run in a fresh interpreter: late in a long pytest session the allocator can serve the block from
# memory the process already holds, and then neither RSS nor its peak moves (seen in CI).
PEAK_RESET_SCRIPT = """
import json, psutil, torch
from bench.measure.memory import kernel_peak_rss, reset_peak_rss
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
    assert readings is not None, "this Linux kernel does not let a process reset its peak RSS"
    assert readings["with_block"] >= readings["before"] + 60 * MIB, readings
    assert readings["reset"]
    # the mark now starts from the RSS of that moment: the freed block's peak is forgotten, and the
    # mark is not below what is resident (the kernel's RSS counters may lag by a few pages per thread)
    assert readings["mark"] < readings["with_block"] - 32 * MIB, readings
    assert readings["mark"] >= readings["resident"] - 4 * MIB, readings
    (tmp_path / "status").write_text("Name:\tx\nVmHWM:\t  2048 kB\n")
    assert kernel_peak_rss(tmp_path) == 2048 * 1024


@cuda_test
def test_device_peaks_on_cuda_above_the_baseline() -> None:
    held = torch.ones(32 * MIB, dtype=torch.uint8, device="cuda:0")  # allocated before the pass
    with MemoryMonitor("cuda:0") as monitor:
        block = torch.ones(64 * MIB, dtype=torch.uint8, device="cuda:0")
        del block
    reading = monitor.reading
    assert reading is not None and reading.device_baseline_allocated_bytes is not None
    assert reading.device_baseline_allocated_bytes >= 32 * MIB
    own = reading.device_peak_allocated_bytes - reading.device_baseline_allocated_bytes
    assert 64 * MIB <= own < 64 * MIB + 8 * MIB  # the pass's own 64 MiB, not what was held before
    assert reading.device_peak_reserved_bytes >= reading.device_peak_allocated_bytes
    assert reading.nvml_used_bytes is None or reading.nvml_used_bytes >= reading.device_peak_reserved_bytes
    del held
