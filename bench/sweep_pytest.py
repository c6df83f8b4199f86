"""The pytest module a run executes (see runner.execute): one test item per case and pass.

Each item's `benchmark` marker carries the case's timer (one that waits for the device) and the
shortest round that keeps that timer's own cost below 1% of a round, so pytest-benchmark's
calibration decides how many calls go into a round, and its statistics and JSON describe the
workloads timed in rounds. The measuring itself is `Sweep.measure`; this file only wires it in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bench.catalog import workload
from bench.devices import device_clock


class MachineInfo:
    """pytest-benchmark's machine-info hook: every JSON it writes carries the torch build and devices.

    The one implementation of the hook: the sweep registers it over the run's facts, the test
    suite over freshly collected ones.
    """

    def __init__(self, facts: Callable[[], dict[str, Any]]) -> None:
        self._facts = facts

    def pytest_benchmark_update_machine_info(self, config: Any, machine_info: dict[str, Any]) -> None:
        env = self._facts()
        torch_facts = env.get("torch", {})
        machine_info["torch_bench"] = {
            "torch": torch_facts.get("version"),
            "cuda": torch_facts.get("cuda"),
            "cudnn": torch_facts.get("cudnn"),
            "gpus": [device.get("name") for device in env.get("cuda", {}).get("devices", [])],
            "driver": env.get("nvml", {}).get("driver_version"),
            "torch_threads": env.get("cpu", {}).get("torch_threads"),
            "container_image": env.get("container", {}).get("image"),
        }


class SweepPlugin(MachineInfo):
    """Registered by `runner.execute` with `pytest.main(plugins=[...])`; holds the running sweep."""

    def __init__(self, sweep: Any) -> None:
        super().__init__(lambda: sweep.run.env)
        self._sweep = sweep
        self.internal_error: str | None = None

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "item" not in metafunc.fixturenames:
            return
        params = []
        for item in self._sweep.items:
            key = item.key
            marks = [
                pytest.mark.benchmark(
                    timer=device_clock(key.device),
                    min_time=self._sweep.min_round_s(key.device),
                    group=key.workload,
                )
            ]
            params.append(pytest.param(item, id=item_id(item), marks=marks))
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


def item_id(item: Any) -> str:
    """`train_step-step-cpu-64-pass1`; non-default dimensions join it (`-compile`, `-threads2`, `-ws2`)."""
    key = item.key
    parts = [key.workload, key.loader or "step", key.device, str(key.batch_size)]
    if key.mode != "eager":
        parts.append(key.mode)
    if key.threads is not None:
        parts.append(f"threads{key.threads}")
    if key.world_size != 1:
        parts.append(f"ws{key.world_size}")
    return "-".join([*parts, f"pass{item.pass_index + 1}"])


def test_case(item: Any, sweep: Any, request: pytest.FixtureRequest) -> None:
    timed_in_rounds = workload(item.key.workload).in_rounds
    benchmark = request.getfixturevalue("benchmark") if timed_in_rounds else None
    sweep.measure(item, benchmark)
