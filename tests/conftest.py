"""Shared fixtures: small real data (a slice of Fashion-MNIST), synthetic IDX files, and the CLI.

Real data comes from Debian's dataset-fashion-mnist package (`.ci/run` installs it); tests that
need it skip with that reason where it is missing. Runs of the harness go through a subprocess
(`python -m bench`), exactly as a user starts it.
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

from bench import env as envmod
from bench.data import FILE_STEMS, write_synthetic
from bench.idx import read_idx, write_idx

ROOT = Path(__file__).resolve().parent.parent
FASHION_DIR = Path(os.environ.get("BENCH_TEST_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
SMALL_TRAIN, SMALL_TEST = 1000, 300


def has_fashion() -> bool:
    return all(
        (FASHION_DIR / f"{stem}.gz").is_file() or (FASHION_DIR / stem).is_file()
        for stem in FILE_STEMS.values()
    )


requires_fashion = pytest.mark.skipif(
    not has_fashion(),
    reason=f"real data missing: apt-get install dataset-fashion-mnist (looked in {FASHION_DIR})",
)
requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device visible on this machine"
)
requires_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


def _fashion_file(stem: str) -> Path:
    plain = FASHION_DIR / stem
    return plain if plain.is_file() else FASHION_DIR / f"{stem}.gz"


@pytest.fixture(scope="session")
def small_real_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 1,000 training and 300 test images of the real Fashion-MNIST, as gzipped IDX files."""
    if not has_fashion():
        pytest.skip(f"real data missing: apt-get install dataset-fashion-mnist (looked in {FASHION_DIR})")
    folder = tmp_path_factory.mktemp("fashion-small")
    sizes = {"train": SMALL_TRAIN, "test": SMALL_TEST}
    for key, stem in FILE_STEMS.items():
        data = read_idx(_fashion_file(stem))
        write_idx(folder / f"{stem}.gz", data[: sizes[key.split("_")[0]]].clone())
    return folder


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
    """Runs `python -m bench ARGS` in a fresh process with this checkout importable."""
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
    "--batch-sizes",
    "32,200",
    "--epochs",
    "2",
    "--epoch-repeats",
    "2",
    "--max-time",
    "0.05",
    "--devices",
    "cpu",
)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory, small_real_dir: Path) -> Path:
    """One real run of every workload on the small real data; tests read its folder, never edit it."""
    folder = tmp_path_factory.mktemp("runs") / "small"
    result = run_cli(
        "run",
        *SMALL_RUN_ARGS,
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(small_real_dir),
        "--out",
        str(folder),
    )
    assert result.returncode == 0, result.output
    return folder


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Every pytest-benchmark JSON from the test suite carries the torch build and devices."""
    torch_facts = envmod.collect_torch()
    cuda = envmod.collect_cuda()
    machine_info["torch_bench"] = {
        "torch": torch_facts.get("version"),
        "cuda": torch_facts.get("cuda"),
        "cudnn": torch_facts.get("cudnn"),
        "torch_threads": torch_facts.get("num_threads"),
        "gpus": [device["name"] for device in cuda.get("devices", [])],
        "driver": envmod.collect_nvml().get("driver_version"),
    }
