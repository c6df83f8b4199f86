"""A stand-in for nvidia-ml-py's `pynvml` module, answering from a described machine.

It has the names `bench.env` calls, with nvidia-ml-py's signatures, return shapes and error codes, so
the collectors take it where they take the real module (`collect_nvml(FakeNvml(...))`). A subprocess
gets it by a shadow package whose `__init__` puts an instance in `sys.modules["pynvml"]`
(`shadow_body`). Calls it does not model raise AttributeError, as in an old nvidia-ml-py.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1

# the strings nvidia-ml-py's NVMLError.__str__ gives for these codes
ERROR_STRINGS = {
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    """nvidia-ml-py's error: the NVML return code in `value`, its text as str()."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return ERROR_STRINGS.get(self.value, f"NVML Error with code {self.value}")


@dataclass
class FakeGpu:
    """One physical GPU. `mig` lists its MIG instances' UUIDs when MIG mode is on (None in a slot: empty)."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    handle_error: int | None = None  # nvmlDeviceGetHandleByIndex fails with this code (a lost GPU)
    uuid_error: int | None = None  # nvmlDeviceGetUUID fails with this code
    mig: list[str | None] | None = None
    mig_slot_errors: dict[int, int] | None = None  # MIG slot -> error code of its handle
    max_mig: int = 7
    memory_total: int = 80 * 2**30
    memory_used: int = 2**30
    energy_mj: int = 123_456_789
    # health (None: this GPU or driver does not answer, as NVML_ERROR_NOT_SUPPORTED)
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    temperature_c: int | None = None
    power_mw: int | None = None
    power_limit_mw: int | None = None
    power_default_limit_mw: int | None = None
    clock_event_mask: int | None = None  # nvmlDeviceGetCurrentClocksEventReasons
    process_pids: list[int] | None = None  # compute processes on the GPU
    persistence_mode: int | None = None
    pcie: tuple[int, int, int, int] | None = None  # generation, its maximum, width, its maximum
    ecc_uncorrected: int | None = None
    remapped_rows: tuple[int, int, int, int] | None = None  # correctable, uncorrectable, pending, failure


def healthy_h100(uuid: str, **changes: Any) -> FakeGpu:
    """A GPU that answers every health query, and is healthy unless `changes` say otherwise."""
    fields: dict[str, Any] = {
        "sm_clock_mhz": 1980, "sm_clock_max_mhz": 1980, "temperature_c": 55, "power_mw": 400_000,
        "power_limit_mw": 700_000, "power_default_limit_mw": 700_000, "clock_event_mask": 0, "process_pids": [],
        "persistence_mode": 1, "pcie": (5, 5, 16, 16), "ecc_uncorrected": 0, "remapped_rows": (0, 0, 0, 0),
    }  # fmt: skip
    return FakeGpu(uuid, **{**fields, **changes})


@dataclass(frozen=True)
class _Handle:
    gpu: int
    mig_slot: int | None = None


class FakeNvml:
    """An object used as the `pynvml` module: nvmlInit, nvmlDeviceGet*, NVMLError and the constants."""

    NVMLError = NVMLError
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION
    NVML_ERROR_NOT_FOUND = NVML_ERROR_NOT_FOUND
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST
    NVML_DEVICE_MIG_DISABLE = NVML_DEVICE_MIG_DISABLE
    NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE
    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC = 1, 0

    def __init__(
        self,
        gpus: list[FakeGpu],
        driver: str = "580.95.05",
        cuda_version: int = 13000,
        init_error: int | None = None,
    ) -> None:
        self.gpus = gpus
        self.driver = driver
        self.cuda_version = cuda_version
        self.init_error = init_error

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return self.cuda_version

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        error = self.gpus[index].handle_error
        if error is not None:
            raise NVMLError(error)
        return _Handle(index)

    def _gpu(self, handle: _Handle) -> FakeGpu:
        return self.gpus[handle.gpu]

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        gpu = self._gpu(handle)
        if gpu.uuid_error is not None:
            raise NVMLError(gpu.uuid_error)
        if handle.mig_slot is not None:
            return str((gpu.mig or [])[handle.mig_slot])
        return gpu.uuid

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> Any:
        gpu = self._gpu(handle)
        return SimpleNamespace(
            total=gpu.memory_total, used=gpu.memory_used, free=gpu.memory_total - gpu.memory_used
        )

    def nvmlDeviceIsMigDeviceHandle(self, handle: _Handle) -> int:
        return int(handle.mig_slot is not None)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        """Millijoules since the driver loaded; a MIG instance has no counter of its own (NVML's answer)."""
        if handle.mig_slot is not None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return self._gpu(handle).energy_mj

    def _answer(self, handle: _Handle, name: str) -> Any:
        value = getattr(self._gpu(handle), name)
        if value is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return value

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock: int) -> int:
        return int(self._answer(handle, "sm_clock_mhz"))

    def nvmlDeviceGetMaxClockInfo(self, handle: _Handle, clock: int) -> int:
        return int(self._answer(handle, "sm_clock_max_mhz"))

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        return int(self._answer(handle, "temperature_c"))

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return int(self._answer(handle, "power_mw"))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        return int(self._answer(handle, "power_limit_mw"))

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: _Handle) -> int:
        return int(self._answer(handle, "power_default_limit_mw"))

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: _Handle) -> int:
        return int(self._answer(handle, "clock_event_mask"))

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=2**30) for pid in self._answer(handle, "process_pids")]

    def nvmlDeviceGetPersistenceMode(self, handle: _Handle) -> int:
        return int(self._answer(handle, "persistence_mode"))

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: _Handle) -> int:
        return int(self._answer(handle, "pcie")[0])

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: _Handle) -> int:
        return int(self._answer(handle, "pcie")[1])

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: _Handle) -> int:
        return int(self._answer(handle, "pcie")[2])

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: _Handle) -> int:
        return int(self._answer(handle, "pcie")[3])

    def nvmlDeviceGetTotalEccErrors(self, handle: _Handle, error_type: int, counter_type: int) -> int:
        return int(self._answer(handle, "ecc_uncorrected"))

    def nvmlDeviceGetRemappedRows(self, handle: _Handle) -> tuple[int, int, int, int]:
        return tuple(self._answer(handle, "remapped_rows"))  # type: ignore[return-value]

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        mode = NVML_DEVICE_MIG_DISABLE if self._gpu(handle).mig is None else NVML_DEVICE_MIG_ENABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        return 0 if self._gpu(handle).mig is None else self._gpu(handle).max_mig

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        gpu = self._gpu(handle)
        error = (gpu.mig_slot_errors or {}).get(index)
        if error is not None:
            raise NVMLError(error)
        instances = gpu.mig or []
        if index >= len(instances) or instances[index] is None:
            raise NVMLError(NVML_ERROR_NOT_FOUND)  # what NVML answers for an empty slot
        return _Handle(handle.gpu, index)


def shadow_body(expression: str) -> str:
    """The `__init__.py` of a shadow `pynvml` package that is the FakeNvml `expression` builds."""
    return (
        "import sys\n"
        "from tests.fake_nvml import FakeGpu, FakeNvml, NVML_ERROR_GPU_IS_LOST, NVML_ERROR_NO_PERMISSION\n"
        f"sys.modules[__name__] = {expression}\n"
    )
