"""The pytest module a run executes (see runner.execute): one test item per planned case.

Each item's `benchmark` marker carries the case's timer (one that waits for the device), so
pytest-benchmark's calibration decides how many calls go into a round and its statistics and JSON
describe the step workloads. The measuring itself is `Sweep.measure`; this file only wires it in.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.catalog import STEP_WORKLOADS
from bench.devices import device_clock


class SweepPlugin:
    """Registered by `runner.execute` with `pytest.main(plugins=[...])`; holds the running sweep."""

    def __init__(self, sweep: Any) -> None:
        self._sweep = sweep
        self.internal_error: str | None = None

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "item" not in metafunc.fixturenames:
            return
        params = []
        for item in self._sweep.items:
            key = item.key
            marks = [pytest.mark.benchmark(timer=device_clock(key.device), group=key.workload)]
            item_id = f"{key.workload}-{key.loader or 'step'}-{key.device}-{key.batch_size}-pass{item.pass_index + 1}"
            params.append(pytest.param(item, id=item_id, marks=marks))
        metafunc.parametrize("item", params)

    @pytest.fixture
    def sweep(self) -> Any:
        return self._sweep

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        yield
        if self._sweep.stop_requested:
            item.session.shouldstop = "stopped by Ctrl-C after the current case"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Sweep.measure catches everything a case raises; a failing item means the harness broke.
        if report.failed and self.internal_error is None:
            self.internal_error = f"{report.nodeid}: {report.longreprtext.strip().splitlines()[-1:]}"

    def pytest_benchmark_update_machine_info(self, config: Any, machine_info: dict[str, Any]) -> None:
        env = self._sweep.run.env
        machine_info["torch_bench"] = {
            "torch": env.get("torch", {}).get("version"),
            "cuda": env.get("torch", {}).get("cuda"),
            "cudnn": env.get("torch", {}).get("cudnn"),
            "gpus": [device.get("name") for device in env.get("cuda", {}).get("devices", [])],
            "driver": env.get("nvml", {}).get("driver_version"),
            "torch_threads": env.get("cpu", {}).get("torch_threads"),
            "container_image": env.get("container", {}).get("image"),
        }


def test_case(item: Any, sweep: Any, request: pytest.FixtureRequest) -> None:
    benchmark = request.getfixturevalue("benchmark") if item.key.workload in STEP_WORKLOADS else None
    sweep.measure(item, benchmark)
