"""`with DeviceWatch(device) as watch: ...` then `watch.record`: a GPU's health around a timed pass.

NVML is read once right before and once right after the block (untimed moments, two reads), so a
pass during which the GPU throttled or was shared is known and marked. On the CPU, or where NVML
cannot see the device, the record is None.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.core.records import DeviceHealthRecord
from bench.env.gpu_health import Reading, reading, record_of
from bench.measure.memory import NvmlDevice


class DeviceWatch:
    def __init__(self, device: torch.device | str, nvml: NvmlDevice | None = None) -> None:
        device = torch.device(device)
        self.nvml = nvml if nvml is not None else NvmlDevice.for_torch_device(device)
        self.record: DeviceHealthRecord | None = None
        self._readings: list[Reading] = []

    def _read(self) -> None:
        if self.nvml is not None:
            self._readings.append(reading(self.nvml.pynvml, self.nvml.handle))

    def __enter__(self) -> DeviceWatch:
        self._read()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._read()
        self.record = record_of(self._readings)
