"""scripts/cuda-reference.sh fits the GPU machine it is written for: every step under a limit that
stops it as Ctrl-C does, the limits within 8 minutes, and everything it wrote in one archive plus
steps.txt. Its dry run (what a machine without a GPU gets) goes through every step and exits 0."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from tests.conftest import ROOT, SMALL_REAL_DIR

SCRIPT = ROOT / "scripts" / "cuda-reference.sh"
STEPS = ("facts", "check", "tests", "run", "modes", "ddp", "pack")
LIMIT_S = 8 * 60


def step_limits(text: str) -> dict[str, int]:
    """Each step's limit in seconds, as the script gives it (`step NAME LIMIT ...`), the largest if two."""
    limits: dict[str, int] = {}
    for name, limit in re.findall(r"^\s*step (\w+) (\d+) ", text, flags=re.MULTILINE):
        limits[name] = max(limits.get(name, 0), int(limit))
    return limits


def test_every_step_has_a_limit_and_the_limits_fit_in_eight_minutes() -> None:
    text = SCRIPT.read_text()
    limits = step_limits(text)
    assert tuple(limits) == STEPS, "every step runs through step(), in this order (tests before modes)"
    assert sum(limits.values()) <= LIMIT_S, limits
    assert 'timeout -s INT -k 30 "$limit"' in text, "a step at its limit is interrupted as Ctrl-C does"
    assert "pip install" not in text and "--no-download" in text


@pytest.mark.slow
def test_the_dry_run_goes_through_every_step_and_packs_their_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,
        "BENCH_REFERENCE_DATA": str(SMALL_REAL_DIR),  # the committed 1k slice: the real-data path, quickly
        "TMPDIR": str(tmp_path),
    }
    result = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # what comes back from the GPU machine: at most 8 files, at most two folders deep
    files = sorted(path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file())
    assert files == ["cuda-reference.tar.gz", "steps.txt"]
    steps = (out / "steps.txt").read_text()
    for name in STEPS:
        assert re.search(rf"^{name} exit=(0|skipped) seconds=\d+", steps, flags=re.MULTILINE), (name, steps)
    assert "data: Fashion-MNIST from" in steps and steps.rstrip().endswith("exit=0 (dry run)")
    assert "modes dry run: a GPU machine runs bench run --devices cuda --modes all" in steps
    assert "check dry run: a GPU machine runs bench check --require cuda" in steps
    assert not list(tmp_path.glob("cuda-reference.*")), "the scratch folder is removed"

    with tarfile.open(out / "cuda-reference.tar.gz") as archive:
        names = set(archive.getnames())
        read = lambda name: archive.extractfile(f"cuda-reference/{name}").read().decode()  # type: ignore[union-attr]  # noqa: E731
        for name in STEPS[:-1]:  # every step's output; pack's own is written while it packs
            assert f"cuda-reference/{name}.txt" in names, name
        for name in (
            "check.json",
            "pytest-cuda.xml",
            "nvidia-smi.txt",
            "steps.txt",
            "manifest.txt",
            "run/results.json",
            "run/summary.md",
            "modes/results.json",
            "modes/summary.md",
        ):
            assert f"cuda-reference/{name}" in names, name
        facts = read("facts.txt")
        assert "torch " in facts and "triton" in facts and "C compiler" in facts and "packages:" in facts
        assert isinstance(json.loads(read("check.json")), dict)
        suite = ElementTree.fromstring(read("pytest-cuda.xml"))
        cases = suite.iter("testcase")
        assert all(case.find("skipped") is not None for case in cases), "without a GPU every cuda test skips"
        assert "dry run: a GPU machine runs" in read("modes.txt")


@pytest.mark.slow
def test_the_gpu_machines_steps_run_through_and_are_packed_even_when_they_fail(tmp_path: Path) -> None:
    """The branch the GPU machine takes, run here without a GPU (`--gpu-steps`): its commands fail as they
    must without one, and still every step runs, is recorded with its exit, and lands in the archive."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(SCRIPT), "--gpu-steps"], env=env, capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    steps = (out / "steps.txt").read_text()
    exits = dict(re.findall(r"^(\w+) exit=(\w+) ", steps, flags=re.MULTILINE))
    assert set(exits) == set(STEPS), steps
    assert exits["check"] != "0" and exits["run"] != "0" and exits["modes"] != "0", "they need a GPU"
    assert exits["facts"] == exits["tests"] == exits["pack"] == "0" and exits["ddp"] == "skipped"
    assert "dry run" not in steps and steps.rstrip().endswith("exit=1")
    with tarfile.open(out / "cuda-reference.tar.gz") as archive:
        names = set(archive.getnames())
    assert {f"cuda-reference/{name}.txt" for name in STEPS[:-1]} <= names
    assert {"cuda-reference/pytest-cuda.xml", "cuda-reference/check.json"} <= names
