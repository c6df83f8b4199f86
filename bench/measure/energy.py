"""Energy over a case's timed work, from the hardware's own counters: never an estimate.

* CUDA: NVML's total energy counter of the device (`nvmlDeviceGetTotalEnergyConsumption`, in mJ,
  Volta and newer; a whole GPU's only, so a MIG instance has none).
* CPU: RAPL through `/sys/class/powercap` (the package domains, in µJ, wrapping at
  `max_energy_range_uj`), where this process may read it (often root only).
* Elsewhere: not available, with the reason.

A meter is read right before and right after the timed work (two reads, no thread). A case's figure
is only reported when its timed work lasted at least `catalog.ENERGY_MIN_WINDOW_S` (1 s): shorter
windows are dominated by the counters' update interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bench.core.results import MeterFacts

if TYPE_CHECKING:
    from bench.measure.memory import NvmlDevice

POWERCAP = Path("/sys/class/powercap")


@dataclass
class EnergyMeter:
    """Reads one device's energy counter in joules; `reason` says why it cannot, if it cannot."""

    source: str | None
    reason: str | None
    _nvml: Any = None
    _domains: tuple[Path, ...] = ()

    @property
    def available(self) -> bool:
        return self.source is not None

    def read(self) -> tuple[float, ...] | None:
        """Joules so far per counter (an arbitrary origin: only differences mean anything), or None."""
        if self._nvml is not None:
            millijoules = self._nvml.energy_mj()
            return None if millijoules is None else (millijoules / 1000,)
        if self._domains:
            try:
                return tuple(int((domain / "energy_uj").read_text()) / 1e6 for domain in self._domains)
            except (OSError, ValueError):
                return None
        return None

    def joules_between(self, start: tuple[float, ...] | None, end: tuple[float, ...] | None) -> float | None:
        """Joules spent between two reads, each RAPL counter unwrapped if it wrapped once in between."""
        if start is None or end is None or len(start) != len(end):
            return None
        total = 0.0
        for index, (before, after) in enumerate(zip(start, end, strict=True)):
            if after >= before:
                total += after - before
            elif self._domains:
                total += after - before + rapl_wrap_joules(self._domains[index])
            else:
                return None
        return total

    def facts(self) -> MeterFacts:
        return MeterFacts(self.available, self.source, self.reason)


def rapl_domains(root: Path = POWERCAP) -> tuple[Path, ...]:
    """The top-level RAPL package domains (`intel-rapl:N`, also used for AMD), sorted."""
    return tuple(sorted(path for path in root.glob("intel-rapl:*") if path.name.count(":") == 1))


def rapl_wrap_joules(domain: Path) -> float:
    """Where a RAPL domain's counter wraps back to zero, in joules."""
    return int((domain / "max_energy_range_uj").read_text()) / 1e6


def cpu_meter(root: Path = POWERCAP) -> EnergyMeter:
    domains = rapl_domains(root)
    if not domains:
        return EnergyMeter(None, f"no RAPL package domain under {root} (a VM, or not an Intel/AMD CPU)")
    try:
        for domain in domains:
            int((domain / "energy_uj").read_text())
    except PermissionError:
        return EnergyMeter(None, f"RAPL counters under {root} are readable by root only")
    except (OSError, ValueError) as error:
        return EnergyMeter(None, f"RAPL counters under {root} cannot be read ({error})")
    return EnergyMeter(f"RAPL ({len(domains)} package domain(s))", None, _domains=domains)


def cuda_meter(device: torch.device) -> EnergyMeter:
    from bench.measure.memory import NvmlDevice

    return nvml_meter(NvmlDevice.for_torch_device(device))


MIG_REASON = (
    "a MIG instance has no energy counter of its own: NVML counts the whole GPU's energy only, which "
    "the other instances share"
)


def nvml_meter(nvml: NvmlDevice | None) -> EnergyMeter:
    """The meter of one NVML device, or the reason there is none."""
    if nvml is None:
        return EnergyMeter(None, "NVML is not available for this device")
    if nvml.energy_mj() is None:
        if nvml.is_mig_instance():
            return EnergyMeter(None, MIG_REASON)
        return EnergyMeter(None, "this GPU or driver has no total energy counter (Volta or newer needed)")
    return EnergyMeter("NVML total energy counter", None, _nvml=nvml)


def meter_for(device: torch.device | str) -> EnergyMeter:
    device = torch.device(device)
    return cuda_meter(device) if device.type == "cuda" else cpu_meter()
