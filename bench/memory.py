"""Memory of one case: host peak RSS, device peaks (torch.cuda), device use as NVML sees it.

Host peak RSS comes from the kernel's own high-water mark where Linux lets a process reset it
(`/proc/self/clear_refs`, then `VmHWM`): exact, and no thread runs beside the benchmark. Elsewhere
psutil samples RSS every 20 ms in a thread; on a 2-core machine that thread slowed a batch-64
training step by about 5%, which is why it is only the fallback.

Peak memory means three different things on a GPU, and each has its own field:
* `device_peak_allocated_bytes`: live tensors at their peak (`torch.cuda.max_memory_allocated`);
* `device_peak_reserved_bytes`: what the caching allocator held at its peak (`max_memory_reserved`);
* `nvml_used_peak_bytes`: the whole device as the driver reports it (all processes, CUDA context
  included), sampled.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import torch

from bench.devices import synchronize
from bench.env import nvml_handles, nvml_text, uuid_key

SAMPLE_INTERVAL_S = 0.02
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


@dataclass(frozen=True)
class MemoryReading:
    """Bytes measured over one case; None where the machine cannot tell."""

    host_rss_start_bytes: int
    host_rss_peak_bytes: int
    device_peak_allocated_bytes: int | None = None
    device_peak_reserved_bytes: int | None = None
    nvml_used_peak_bytes: int | None = None


class NvmlDevice:
    """The NVML handle of one torch CUDA device (matched by UUID, so CUDA_VISIBLE_DEVICES is respected)."""

    def __init__(self, handle: Any, pynvml: Any) -> None:
        self._handle = handle
        self._pynvml = pynvml

    @classmethod
    def for_torch_device(cls, device: torch.device) -> NvmlDevice | None:
        """None when NVML is missing or the device cannot be matched; memory is then reported without it."""
        if device.type != "cuda":
            return None
        try:
            import pynvml

            pynvml.nvmlInit()
            wanted = uuid_key(torch.cuda.get_device_properties(device).uuid)
            for handle in nvml_handles(pynvml):
                if uuid_key(nvml_text(pynvml.nvmlDeviceGetUUID(handle))) == wanted:
                    return cls(handle, pynvml)
        except Exception:  # no NVML, no driver, an old nvidia-ml-py: memory is reported without it
            return None
        return None

    def used_bytes(self) -> int | None:
        try:
            return int(self._pynvml.nvmlDeviceGetMemoryInfo(self._handle).used)
        except Exception:
            return None


class MemoryMonitor:
    """Context manager: resets the peaks on entry and reads them on exit.

    A sampling thread runs only for what has no kernel counter: NVML's device memory, and host RSS
    where the peak mark cannot be reset. The final readings are taken after the case, so a peak in
    the last interval is not missed.
    """

    def __init__(self, device: torch.device | str, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self._process = psutil.Process()
        self._nvml = NvmlDevice.for_torch_device(self.device)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss_start = 0
        self._rss_peak = 0
        self._nvml_peak: int | None = None
        self._kernel_peak = False
        self.reading: MemoryReading | None = None

    def __enter__(self) -> MemoryMonitor:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._rss_start = self._rss_peak = self._process.memory_info().rss
        self._kernel_peak = reset_peak_rss()
        self._sample()
        if self._nvml is not None or not self._kernel_peak:
            self._thread = threading.Thread(target=self._run, name="bench-memory-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        allocated = reserved = None
        if self.device.type == "cuda":
            try:
                synchronize(self.device)
                allocated = int(torch.cuda.max_memory_allocated(self.device))
                reserved = int(torch.cuda.max_memory_reserved(self.device))
            except RuntimeError:  # a failed case may leave the device unusable; keep what was sampled
                pass
        self._sample()
        if self._kernel_peak:
            self._rss_peak = max(self._rss_peak, kernel_peak_rss() or 0)
        self.reading = MemoryReading(
            host_rss_start_bytes=self._rss_start,
            host_rss_peak_bytes=self._rss_peak,
            device_peak_allocated_bytes=allocated,
            device_peak_reserved_bytes=reserved,
            nvml_used_peak_bytes=self._nvml_peak,
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        if not self._kernel_peak:
            try:
                self._rss_peak = max(self._rss_peak, self._process.memory_info().rss)
            except psutil.Error:
                pass
        if self._nvml is not None:
            used = self._nvml.used_bytes()
            if used is not None:
                self._nvml_peak = used if self._nvml_peak is None else max(self._nvml_peak, used)
