"""NVML (nvidia-ml-py's `pynvml` module): the driver's view of every GPU, matched to torch's by UUID.

Every function takes the module to ask (`pynvml`), so tests pass a fake one (tests/fake_nvml.py).
One GPU NVML cannot read is reported on its own; it never turns the whole of NVML into
"unavailable".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

Facts = dict[str, Any]


def unavailable(reason: str) -> Facts:
    return {"available": False, "reason": reason}


THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def uuid_key(uuid: object) -> str:
    """A device UUID as torch and NVML both can spell it: without `GPU-`/`MIG-`, lower case."""
    text = str(uuid or "").strip().lower()
    for prefix in ("gpu-", "mig-"):
        text = text.removeprefix(prefix)
    return text


def mig_enabled(pynvml: Any, handle: Any) -> bool:
    """Whether a GPU is in MIG mode now: CUDA then sees its instances, never the GPU itself."""
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except (pynvml.NVMLError, AttributeError):  # no MIG on this GPU or in this nvidia-ml-py
        return False
    return bool(current == getattr(pynvml, "NVML_DEVICE_MIG_ENABLE", 1))


def mig_handles(pynvml: Any, handle: Any) -> tuple[list[tuple[int, Any]], list[Facts]]:
    """A MIG-mode GPU's instances as (slot, handle), and the slots NVML failed to open (with the error).

    An empty slot answers NVML_ERROR_NOT_FOUND and is skipped; any other error is a fault to report.
    """
    found, failed = [], []
    for mig_index in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            found.append((mig_index, pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, mig_index)))
        except pynvml.NVMLError as error:
            if getattr(error, "value", None) != getattr(pynvml, "NVML_ERROR_NOT_FOUND", 6):
                failed.append({"mig_index": mig_index, **nvml_error(error)})
    return found, failed


def nvml_handles(pynvml: Any) -> list[Any]:
    """The NVML handles of what CUDA can use: whole GPUs, and in place of a MIG-mode GPU its instances.

    A GPU NVML cannot open (lost, no permission) is left out, so the others can still be matched.
    """
    handles = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            if not mig_enabled(pynvml, handle):
                handles.append(handle)
                continue
            handles += [mig for _slot, mig in mig_handles(pynvml, handle)[0]]
        except pynvml.NVMLError:
            continue
    return handles


def nvml_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_error(error: Exception) -> Facts:
    """An NVML error as facts: its text, and its return code, which tells a lost GPU from a denied one."""
    return {"error": f"{type(error).__name__}: {error}", "code": getattr(error, "value", None)}


def collect_nvml(pynvml: Any = None) -> Facts:
    """The driver's view through NVML (nvidia-ml-py): driver version, every GPU, and the GPUs it cannot read.

    `pynvml` is the module to ask, nvidia-ml-py's by default (tests pass a fake one). One bad GPU is
    recorded in `failed_devices` with its error; it must not turn the whole of NVML into "unavailable".
    """
    from bench.env.gpu_health import preflight  # it reads NVML through this module's helpers

    if pynvml is None:
        try:
            pynvml = importlib.import_module("pynvml")
        except ImportError:
            return unavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        text = str(error)
        if "Library Not Found" in text or "not found" in text.lower():
            return unavailable(
                f"no NVIDIA driver: the NVML library (libnvidia-ml.so.1) was not found ({text})"
            )
        if "Driver Not Loaded" in text:
            return unavailable(f"the NVIDIA kernel driver is not loaded ({text})")
        return unavailable(f"NVML failed to start: {text}")
    facts: Facts = {"available": True, "driver_version": nvml_text(pynvml.nvmlSystemGetDriverVersion())}
    try:
        version = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        facts["driver_cuda_version"] = f"{version // 1000}.{version % 1000 // 10}"
    except (pynvml.NVMLError, AttributeError):
        facts["driver_cuda_version"] = None
    count = pynvml.nvmlDeviceGetCount()
    devices, failed = [], []
    for index in range(count):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid = nvml_text(pynvml.nvmlDeviceGetUUID(handle))
        except pynvml.NVMLError as error:  # a lost or inaccessible GPU: report it, keep the others
            failed.append({"index": index, "mig": False, "mig_index": None, **nvml_error(error)})
            continue
        device = _nvml_device(pynvml, index, handle, uuid)
        device["preflight"] = preflight(pynvml, handle)
        instances, mig_failed = _nvml_mig(pynvml, handle)
        device["mig_enabled"] = instances is not None
        device["mig_devices"] = instances or []
        failed += [{"index": index, "mig": True, **entry} for entry in mig_failed]
        devices.append(device)
    facts["device_count"] = count
    facts["devices"] = devices
    facts["failed_devices"] = failed
    facts["mig_device_uuids"] = [uuid_key(uuid) for d in devices for uuid in d["mig_devices"]]
    # what CUDA can use: a MIG-mode GPU shows up as its instances, not as itself
    facts["cuda_device_uuids"] = [
        uuid_key(uuid) for d in devices for uuid in (d["mig_devices"] if d["mig_enabled"] else [d["uuid"]])
    ]
    return facts


def _nvml_mig(pynvml: Any, handle: Any) -> tuple[list[str] | None, list[Facts]]:
    """A GPU's MIG instance UUIDs (None when MIG is off), and the instances NVML failed to read."""
    if not mig_enabled(pynvml, handle):
        return None, []
    try:
        handles, failed = mig_handles(pynvml, handle)
    except pynvml.NVMLError as error:
        return [], [{"mig_index": None, **nvml_error(error)}]
    uuids = []
    for mig_index, mig_handle in handles:
        try:
            uuids.append(nvml_text(pynvml.nvmlDeviceGetUUID(mig_handle)))
        except pynvml.NVMLError as error:
            failed.append({"mig_index": mig_index, **nvml_error(error)})
    return uuids, failed


def _nvml_device(pynvml: Any, index: int, handle: Any, uuid: str) -> Facts:
    def read(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (pynvml.NVMLError, AttributeError):
            return None

    memory = read(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
    reasons_call = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
    )
    mask = read(lambda: reasons_call(handle)) if reasons_call else None
    power = read(lambda: pynvml.nvmlDeviceGetPowerUsage(handle))
    return {
        "index": index,
        "name": read(lambda: nvml_text(pynvml.nvmlDeviceGetName(handle))),
        "uuid": uuid,
        "memory_total_bytes": memory.total if memory else None,
        "memory_used_bytes": memory.used if memory else None,
        "sm_clock_mhz": read(lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
        "sm_clock_max_mhz": read(lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)),
        "memory_clock_mhz": read(lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)),
        "temperature_c": read(lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
        "power_w": power / 1000 if power is not None else None,
        "utilization_percent": read(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        "throttle_reasons": decode_throttle_reasons(mask),
        "compute_processes": read(lambda: len(pynvml.nvmlDeviceGetComputeRunningProcesses(handle))),
    }


def decode_throttle_reasons(mask: int | None) -> list[str] | None:
    """NVML's clock-event bit mask as names; idle is normal and kept, so an empty list means none."""
    if mask is None:
        return None
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
