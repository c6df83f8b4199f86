"""A GPU's health through NVML: what could make a figure wrong (throttling, a shared device), read at
untimed moments around every pass, and the preflight a GPU administrator runs before a benchmark.

Every function takes the module to ask (`pynvml`) and a handle, so tests pass the fake NVML
(tests/fake_nvml.py). A value NVML cannot give (an old driver, a MIG instance, no permission) is
None and never an error. Torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.core.records import DeviceHealthRecord
from bench.env.nvml import decode_throttle_reasons

Reading = dict[str, Any]


def _read(pynvml: Any, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (pynvml.NVMLError, AttributeError, TypeError):
        return None


def other_processes(pynvml: Any, handle: Any, pid: int | None = None) -> int | None:
    """Processes other than this one computing (or drawing) on the device right now."""
    me = os.getpid() if pid is None else pid
    found: set[int] = set()
    known = False
    for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        processes = _read(pynvml, partial(getattr(pynvml, name), handle)) if hasattr(pynvml, name) else None
        if processes is not None:
            known = True
            found.update(int(p.pid) for p in processes if int(p.pid) != me)
    return len(found) if known else None


def reading(pynvml: Any, handle: Any, pid: int | None = None) -> Reading:
    """The device's state now: clocks against their maxima, temperature, power against its limit,
    clock-event (throttle) reasons, and the other processes on it."""
    reasons_call = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
    )
    power = _read(pynvml, lambda: pynvml.nvmlDeviceGetPowerUsage(handle))
    limit = _read(pynvml, lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    return {
        "sm_clock_mhz": _read(pynvml, lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
        "sm_clock_max_mhz": _read(
            pynvml, lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
        ),
        "temperature_c": _read(
            pynvml, lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        ),
        "power_w": power / 1000 if power is not None else None,
        "power_limit_w": limit / 1000 if limit else None,
        "throttle_reasons": decode_throttle_reasons(_read(pynvml, lambda: reasons_call(handle)))
        if reasons_call
        else None,
        "other_processes": other_processes(pynvml, handle, pid),
    }


def record_of(readings: list[Reading]) -> DeviceHealthRecord | None:
    """What the readings around one pass say, worst case first; None without a reading."""
    if not readings:
        return None
    reasons = sorted({r for reading in readings for r in reading.get("throttle_reasons") or []})
    clock_shares = [
        reading["sm_clock_mhz"] / reading["sm_clock_max_mhz"]
        for reading in readings
        if reading.get("sm_clock_mhz") and reading.get("sm_clock_max_mhz")
        and "gpu_idle" not in (reading.get("throttle_reasons") or [])  # an idle GPU lowers its clock: fine
    ]  # fmt: skip
    power_shares = [
        reading["power_w"] / reading["power_limit_w"]
        for reading in readings
        if reading.get("power_w") is not None and reading.get("power_limit_w")
    ]
    temperatures = [
        reading["temperature_c"] for reading in readings if reading.get("temperature_c") is not None
    ]
    others = [
        reading["other_processes"] for reading in readings if reading.get("other_processes") is not None
    ]
    return DeviceHealthRecord(
        readings=len(readings),
        throttle_reasons=reasons,
        sm_clock_share=round(min(clock_shares), 4) if clock_shares else None,
        temperature_c=max(temperatures) if temperatures else None,
        power_share=round(max(power_shares), 4) if power_shares else None,
        other_processes=max(others) if others else None,
    )


def preflight(pynvml: Any, handle: Any, pid: int | None = None) -> Reading:
    """What an administrator checks before trusting a GPU: persistence mode, power limit against its
    default, PCIe link against its maximum, ECC errors and remapped rows, MIG, other processes."""
    remapped = _read(pynvml, lambda: pynvml.nvmlDeviceGetRemappedRows(handle))
    return {
        "persistence_mode": _read(pynvml, lambda: bool(pynvml.nvmlDeviceGetPersistenceMode(handle))),
        "power_limit_w": _milli(_read(pynvml, lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle))),
        "power_limit_default_w": _milli(
            _read(pynvml, lambda: pynvml.nvmlDeviceGetPowerManagementDefaultLimit(handle))
        ),
        "pcie_gen": _read(pynvml, lambda: pynvml.nvmlDeviceGetCurrPcieLinkGeneration(handle)),
        "pcie_gen_max": _read(pynvml, lambda: pynvml.nvmlDeviceGetMaxPcieLinkGeneration(handle)),
        "pcie_width": _read(pynvml, lambda: pynvml.nvmlDeviceGetCurrPcieLinkWidth(handle)),
        "pcie_width_max": _read(pynvml, lambda: pynvml.nvmlDeviceGetMaxPcieLinkWidth(handle)),
        "ecc_uncorrected": _read(
            pynvml,
            lambda: pynvml.nvmlDeviceGetTotalEccErrors(
                handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
            ),
        ),
        "remapped_rows_pending": bool(remapped[2]) if remapped is not None else None,
        "remapped_rows_failed": bool(remapped[3]) if remapped is not None else None,
        "other_processes": other_processes(pynvml, handle, pid),
    }


def _milli(value: Any) -> float | None:
    return value / 1000 if value else None


def preflight_problems(facts: Reading) -> list[tuple[str, str]]:
    """(what is wrong, what to do) for each preflight finding that can make figures wrong or slow."""
    problems = []
    if facts.get("persistence_mode") is False:
        problems.append(("persistence mode is off: the driver reinitialises the GPU between processes",
                         "sudo nvidia-smi -pm 1 (or run nvidia-persistenced)"))  # fmt: skip
    limit, default = facts.get("power_limit_w"), facts.get("power_limit_default_w")
    if limit and default and limit < 0.95 * default:
        problems.append((f"power limit {limit:.0f} W is below the default {default:.0f} W: clocks will drop",
                         f"sudo nvidia-smi -pl {default:.0f}, or expect lower figures"))  # fmt: skip
    gen, gen_max = facts.get("pcie_gen"), facts.get("pcie_gen_max")
    width, width_max = facts.get("pcie_width"), facts.get("pcie_width_max")
    if (gen and gen_max and gen < gen_max) or (width and width_max and width < width_max):
        problems.append((f"PCIe link at gen {gen} x{width}, of gen {gen_max} x{width_max}: host copies slow down",
                         "an idle GPU may lower its link: check under load; else reseat the card or check the "
                         "slot and BIOS"))  # fmt: skip
    if facts.get("ecc_uncorrected"):
        problems.append((f"{facts['ecc_uncorrected']} uncorrected ECC errors since the driver loaded",
                         "drain the GPU and reset it (nvidia-smi -r); replace it if they return"))  # fmt: skip
    if facts.get("remapped_rows_failed") or facts.get("remapped_rows_pending"):
        problems.append(("memory rows remapped (pending or failed): the GPU needs a reset",
                         "reset the GPU (nvidia-smi -r); a failed remap means a replacement"))  # fmt: skip
    if facts.get("other_processes"):
        problems.append((f"{facts['other_processes']} other processes use this GPU: figures will be shared",
                         "stop them (nvidia-smi shows them), or expect cases marked shared"))  # fmt: skip
    return problems
