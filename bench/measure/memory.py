"""Memory of one pass of a case: host peak RSS, device peaks (torch.cuda), device use as NVML sees it.

Nothing runs beside timed work: no sampling thread. Host peak RSS is the kernel's own high-water
mark, reset per pass where Linux allows it (`/proc/self/clear_refs`, then `VmHWM`); the device
peaks are the caching allocator's counters. Both are read after the pass. NVML's view of the
device is read at untimed moments the measuring code chooses (`MemoryMonitor.sample`: between
epochs, after the rounds) and at the end; while the case's tensors are alive the allocator keeps its
blocks, so the reading at the end sees the pass's reserved memory. Where the kernel's mark cannot be
reset (not Linux), host RSS is read at those same moments: a lower bound, said in `host_peak_source`.

Peak memory means different things on a GPU, and each has its own field:
* `device_peak_allocated_bytes`: live tensors at their peak (`torch.cuda.max_memory_allocated`),
  and `device_baseline_allocated_bytes`, what was allocated when the pass started (cuBLAS
  workspaces and the like, which `empty_cache` does not free): the case's own peak is the difference;
* `device_peak_reserved_bytes`: what the caching allocator held at its peak (`max_memory_reserved`);
* `nvml_used_bytes`: the whole device as the driver reports it (all processes, CUDA context included).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import torch

from bench.core.records import MemoryRecord
from bench.env.nvml import nvml_handles, nvml_text, uuid_key
from bench.measure.devices import synchronize

PROC_SELF = Path("/proc/self")


def reset_peak_rss(proc: Path = PROC_SELF) -> bool:
    """Resets the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False where it cannot."""
    try:
        (proc / "clear_refs").write_text("5")
    except OSError:
        return False
    return kernel_peak_rss(proc) is not None


def kernel_peak_rss(proc: Path = PROC_SELF) -> int | None:
    """`VmHWM` of /proc/self/status in bytes: the highest RSS since the last reset."""
    try:
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class NvmlDevice:
    """The NVML handle of one torch CUDA device (matched by UUID, so CUDA_VISIBLE_DEVICES is respected)."""

    def __init__(self, handle: Any, pynvml: Any) -> None:
        self.handle = handle
        self.pynvml = pynvml

    @classmethod
    def for_torch_device(cls, device: torch.device) -> NvmlDevice | None:
        """None when NVML is missing or the device cannot be matched; memory is then reported without it."""
        if device.type != "cuda":
            return None
        try:
            import pynvml

            pynvml.nvmlInit()
            wanted = uuid_key(torch.cuda.get_device_properties(device).uuid)
            handles = nvml_handles(pynvml)
        except Exception:  # no NVML, no driver, an old nvidia-ml-py: memory is reported without it
            return None
        for handle in handles:
            try:  # one GPU whose UUID cannot be read must not hide the others
                if uuid_key(nvml_text(pynvml.nvmlDeviceGetUUID(handle))) == wanted:
                    return cls(handle, pynvml)
            except Exception:
                continue
        return None

    def used_bytes(self) -> int | None:
        try:
            return int(self.pynvml.nvmlDeviceGetMemoryInfo(self.handle).used)
        except Exception:
            return None

    def is_mig_instance(self) -> bool:
        """Whether this handle is a MIG instance's rather than a whole GPU's."""
        try:
            return bool(self.pynvml.nvmlDeviceIsMigDeviceHandle(self.handle))
        except Exception:  # an old nvidia-ml-py, or a driver without MIG
            return False

    def energy_mj(self) -> int | None:
        """The device's total energy counter in millijoules (Volta and newer), or None."""
        try:
            return int(self.pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception:
            return None


class MemoryMonitor:
    """Context manager around one pass: resets the peaks on entry, reads them on exit. No thread.

    If reading the device at the end fails (a CUDA error surfacing at the final synchronize) and
    the pass itself raised nothing, the error is raised: an asynchronous fault must fail the pass,
    not be saved as `ok`. When the pass already failed, its own error is the one that counts.
    """

    def __init__(self, device: torch.device | str, proc: Path = PROC_SELF) -> None:
        self.device = torch.device(device)
        self._proc = proc
        self._process = psutil.Process()
        self._nvml = NvmlDevice.for_torch_device(self.device)
        self._rss_start = 0
        self._rss_seen = 0
        self._nvml_seen: int | None = None
        self._baseline: int | None = None
        self.kernel_peak = False
        self.reading: MemoryRecord | None = None

    def __enter__(self) -> MemoryMonitor:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = int(torch.cuda.memory_allocated(self.device))
        self._rss_start = self._rss_seen = self._process.memory_info().rss
        self.kernel_peak = reset_peak_rss(self._proc)
        self.sample()
        return self

    def sample(self) -> None:
        """Reads what has no counter (NVML; host RSS without the kernel's mark). Call only outside timed work."""
        if not self.kernel_peak:
            try:
                self._rss_seen = max(self._rss_seen, self._process.memory_info().rss)
            except psutil.Error:
                pass
        if self._nvml is not None:
            used = self._nvml.used_bytes()
            if used is not None:
                self._nvml_seen = used if self._nvml_seen is None else max(self._nvml_seen, used)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            allocated, reserved = self.device_peaks()
        except RuntimeError:
            if exc_type is None:
                raise
            allocated = reserved = None  # the pass failed already; keep what was read
        self.sample()
        rss_peak = self._rss_seen
        if self.kernel_peak:
            rss_peak = max(rss_peak, kernel_peak_rss(self._proc) or 0)
        self.reading = MemoryRecord(
            host_rss_start_bytes=self._rss_start,
            host_rss_peak_bytes=rss_peak,
            device_baseline_allocated_bytes=self._baseline,
            device_peak_allocated_bytes=allocated,
            device_peak_reserved_bytes=reserved,
            nvml_used_bytes=self._nvml_seen,
        )

    def device_peaks(self) -> tuple[int | None, int | None]:
        """(peak allocated, peak reserved) of a CUDA device after waiting for it; (None, None) on the CPU."""
        if self.device.type != "cuda":
            return None, None
        synchronize(self.device)
        return int(torch.cuda.max_memory_allocated(self.device)), int(
            torch.cuda.max_memory_reserved(self.device)
        )
