"""Shared fixtures: a small real data set (committed with the tests), synthetic IDX files, and the CLI.

The real data is the first 1,000 training and 300 test images of Fashion-MNIST, committed under
`tests/data/fashion-mnist-1k` (MIT, see its README), so no test depends on a system package. Runs of
the harness go through a subprocess (`python -m bench`), exactly as a user starts it.

The only tests that skip are the CUDA ones, on a machine without a GPU (`cuda` marker), and only
with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from bench.core.keys import CaseKey
from bench.core.plan import Options
from bench.core.results import CaseResult, DatasetInfo, Run
from bench.engine.pytest_driver import MachineInfo
from bench.env import collect as envmod
from bench.measure.data import write_synthetic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
# the runs committed under results/ (each made by the harness): the fast lane reads these
REFERENCE_RUNS = sorted(path.parent for path in RESULTS.glob("**/results.json"))
SMALL_REAL_DIR = ROOT / "tests" / "data" / "fashion-mnist-1k"
SMALL_TRAIN, SMALL_TEST = 1000, 300
NO_CUDA_REASON = "no CUDA device visible on this machine"

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA_REASON)
requires_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


def cuda_test(function):  # type: ignore[no-untyped-def]
    """A test that needs a GPU: marked `cuda` (scripts/cuda-reference.sh runs `-m cuda`), skipped without one."""
    return pytest.mark.cuda(requires_cuda(function))


COMPILE_CHECKED_AS_MISSING: list[str] = []


def compile_runs_here(test: str) -> bool:
    """Whether torch.compile can run on this CPU (it needs a C++ compiler). Where it cannot, a compile test
    checks instead that the mode says so, which the harness shows as a `skipped` cell, and the session
    ends with a line naming those tests: never a silent skip."""
    from bench.measure import modes

    reason = modes.unsupported("compile", "cpu")
    if reason is None:
        return True
    assert "C++ compiler (g++)" in reason, reason
    COMPILE_CHECKED_AS_MISSING.append(test)
    return False


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if COMPILE_CHECKED_AS_MISSING:
        terminalreporter.write_line(
            f"torch.compile cannot run here (no C++ compiler): {len(COMPILE_CHECKED_AS_MISSING)} compile tests "
            f"checked that the mode says so instead ({', '.join(COMPILE_CHECKED_AS_MISSING)}); install g++ "
            "to run them",
            yellow=True,
        )


# fixtures that run the harness end to end: a test that needs one is `slow` (`-m "not slow"` skips it)
MEASURED_RUN_FIXTURES = {"small_run", "two_runs", "two_process_run", "gpu_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MEASURED_RUN_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_configure(config: pytest.Config) -> None:
    # every pytest-benchmark JSON of the suite carries the torch build and devices, as a run's does
    config.pluginmanager.register(MachineInfo(envmod.collect_all), "torch-bench-machine-info")


@pytest.fixture(scope="session")
def small_real_dir() -> Path:
    """The committed slice of real Fashion-MNIST: four gzipped IDX files in a flat folder."""
    assert SMALL_REAL_DIR.is_dir(), f"the committed test data is missing: {SMALL_REAL_DIR}"
    return SMALL_REAL_DIR


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small synthetic IDX files (2,000 + 400 images) in the real format, un-gzipped."""
    folder = tmp_path_factory.mktemp("synthetic-small")
    write_synthetic(folder, train=2000, test=400)
    return folder


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def shadow_package(folder: Path, name: str, body: str) -> dict[str, str]:
    """A fake package `name` (its `__init__.py` is `body`) and the environment that imports it first."""
    package = folder / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(body)
    return {"PYTHONPATH": f"{folder}{os.pathsep}{ROOT}"}


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> CliResult:
    """Runs `python -m bench ARGS` in a fresh process with this checkout importable.

    A `bench run` gets `--retry-contended 0` unless it says otherwise: on a busy machine the retry
    slots would add passes, which tests that count passes and items do not expect (busy or not, the
    suite must pass)."""
    if args and args[0] == "run" and "--retry-contended" not in args and "--help" not in args:
        args = (*args, "--retry-contended", "0")
    environment = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    environment.update(env or {})
    process = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd or ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(process.returncode, process.stdout, process.stderr)


SMALL_RUN_ARGS = (
    "--batch-sizes", "32,200", "--epochs", "2", "--epoch-repeats", "2", "--train-runs", "2",
    "--max-time", "0.05", "--devices", "cpu",
)  # fmt: skip


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory, small_real_dir: Path) -> Path:
    """One real run of every workload on the small real data; tests read its folder, never edit it."""
    folder = tmp_path_factory.mktemp("runs") / "small"
    result = run_cli(
        "run", *SMALL_RUN_ARGS, "--dataset", "fashion-mnist", "--data-dir", str(small_real_dir),
        "--out", str(folder),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    return folder


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def make_run(*cases: CaseResult, synthetic: bool = False, **fields: object) -> Run:
    """A run holding `cases` (records made by hand for a unit test), with minimal facts."""
    name = "synthetic" if synthetic else "fashion-mnist"
    dataset = DatasetInfo(name, name, "here", {}, 1000, 300, synthetic)
    devices = tuple(dict.fromkeys(case.key.device for case in cases)) or ("cpu",)
    options = Options(devices=devices, batch_sizes=(1,), workloads=("forward",))
    return Run("test", "now", {}, dataset, options, cases=list(cases), planned_cases=len(cases), **fields)  # type: ignore[arg-type]


def by_key(run: Run) -> dict[CaseKey, CaseResult]:
    """A run's cases by their keys."""
    return {case.key: case for case in run.cases}


def reference_copy(tmp_path: Path, name: str = "2026-11-29-vm-reference") -> Path:
    """A copy of a committed run, safe to render into."""
    import shutil

    target = tmp_path / name.replace("/", "-")
    shutil.copytree(RESULTS / name, target)
    return target
