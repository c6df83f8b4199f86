"""The sweep as one pytest session: one test item per case and pass, this file its test module.

The cases execute as one pytest session so that the workloads timed in rounds are timed by
pytest-benchmark itself: its calibration, statistics and JSON, with a timer that waits for the
device (`devices.device_clock`). Each item's `benchmark` marker carries the case's timer and the
shortest round that keeps that timer's own cost below 1% of a round. The measuring itself is
`Sweep.measure`; this file only wires it in. The first Ctrl-C stops after the current case; a second
one, or a SIGTERM or SIGHUP, aborts it (bench.core.stopping). A write the run folder refuses stops
the session at once (WriteFailure).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.core.catalog import workload
from bench.core.errors import WriteFailure
from bench.core.keys import item_id
from bench.core.stopping import signals_interrupt, stop_after_current_case
from bench.core.store import PYTEST_BENCHMARK_FILE, write_atomic
from bench.measure.devices import device_clock


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
    """Registered by `execute` with `pytest.main(plugins=[...])`; holds the running sweep."""

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
            params.append(pytest.param(item, id=item_id(item.key, item.pass_index), marks=marks))
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
        if report.failed and self.internal_error is None and self._sweep.fatal is None:
            self.internal_error = f"{report.nodeid}: {report.longreprtext.strip().splitlines()[-1:]}"


def test_case(item: Any, sweep: Any, request: pytest.FixtureRequest) -> None:
    timed_in_rounds = workload(item.key.workload).in_rounds
    benchmark = request.getfixturevalue("benchmark") if timed_in_rounds else None
    try:
        sweep.measure(item, benchmark)
    except WriteFailure as error:  # the folder took no more: the run stops here, the last save stands
        sweep.fatal = error
        request.session.shouldstop = str(error)
        raise


@contextmanager
def stop_policy(sweep: Any) -> Iterator[None]:
    """Alone, the first Ctrl-C finishes the case in progress (bench.core.stopping); with ranks, every
    signal stops at once, as the others ranks do (torchrun gives them 30 s before it kills them)."""
    if sweep.world is not None:
        with signals_interrupt():
            yield
        return

    def stop() -> None:
        sweep.stop_requested = True

    with stop_after_current_case(sweep.progress.say, stop):
        yield


def execute(sweep: Any) -> str:
    """Runs every planned item through pytest; returns the run's final state."""
    plugin = SweepPlugin(sweep)
    with tempfile.TemporaryDirectory(prefix="bench-pytest-") as config_dir:
        # the plugin writes its JSON and storage here; the harness copies the JSON into the run folder
        # with its own writer (atomic, never through a link planted there), and leaves no .benchmarks/
        plugin_json = Path(config_dir) / PYTEST_BENCHMARK_FILE
        ini = Path(config_dir) / "pytest.ini"
        ini.write_text("[pytest]\n")  # the sweep must not pick up the caller's pytest configuration
        args = [
            __file__,
            "-c", str(ini),
            "--rootdir", config_dir,
            "-p", "no:cacheprovider",
            "-p", "no:terminal",
            "-p", "pytest_benchmark.plugin",
            "--capture=no",
            "-W", "ignore::pytest.PytestUnraisableExceptionWarning",
            "--benchmark-disable-gc",
            "--benchmark-max-time", str(sweep.options.max_time / sweep.options.passes),
            "--benchmark-min-rounds", str(sweep.options.min_rounds),
            "--benchmark-json", str(plugin_json),
            "--benchmark-storage", f"file://{config_dir}/storage",
            "--benchmark-quiet",
        ]  # fmt: skip
        previous_autoload = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugins named above
        try:
            with stop_policy(sweep):
                exit_code = pytest.main(args, plugins=[plugin])
        finally:
            if previous_autoload is None:
                os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
            else:
                os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = previous_autoload
        if sweep.fatal is not None:
            raise sweep.fatal
        if plugin_json.is_file():
            write_atomic(sweep.folder / PYTEST_BENCHMARK_FILE, plugin_json.read_text(encoding="utf-8"))
    if plugin.internal_error:
        raise RuntimeError(f"the benchmark session failed: {plugin.internal_error}")
    if exit_code in (
        pytest.ExitCode.INTERNAL_ERROR,
        pytest.ExitCode.USAGE_ERROR,
        pytest.ExitCode.NO_TESTS_COLLECTED,
    ):
        raise RuntimeError(
            f"the benchmark session failed to start (pytest exit status {int(exit_code)}); see above"
        )
    finished = sweep.progress.done >= len(sweep.items)
    if finished and exit_code in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return "complete"
    return "interrupted"
