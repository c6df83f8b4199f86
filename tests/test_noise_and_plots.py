"""Noise is visible (a loaded machine looks different), and `--plot` draws real PNGs or fails early."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core.schema import load_run
from tests.conftest import run_cli, shadow_package

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_run_on_a_loaded_machine_says_so(tmp_path: Path) -> None:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        result = run_cli(
            "run", "--devices", "cpu", "--workloads", "forward", "--batch-sizes", "64", "--passes", "2",
            "--max-time", "0.5", "--dataset", "synthetic", "--data-dir", str(tmp_path / "data"),
            "--out", str(tmp_path / "run"),
        )  # fmt: skip
    finally:
        for spinner in spinners:
            spinner.kill()
    assert result.returncode == 0, result.output
    run = load_run(tmp_path / "run")
    busy = run.env["load"]["busy_processes"]
    assert {p["pid"] for p in busy} >= {s.pid for s in spinners}
    header = (tmp_path / "run" / "summary.md").read_text().split("## Throughput")[0]
    assert "other busy processes: none" not in header
    load_line = next(line for line in header.splitlines() if line.startswith("Load at start:"))
    for spinner in spinners:  # each spinner named with its share of a CPU, in the line about load
        seen = next(p for p in busy if p["pid"] == spinner.pid)
        assert seen["cpu_percent"] >= 5, seen  # 20% or more, or runnable on a machine busier still
        assert f"{seen['name']} ({seen['cpu_percent']}%)" in load_line, load_line
    assert run.during_run is not None and run.during_run.steal_percent is not None


def test_report_plot_draws_pngs_and_links_them(small_run: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    result = run_cli("report", str(copy), "--plot")
    assert result.returncode == 0, result.output
    for name in ("throughput.png", "memory.png"):
        data = (copy / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
        # the measured lines are drawn: axes, grid and text are grey or black, only the plotted
        # series (and their legend entries) are in colour
        pixels = imread(copy / name)[..., :3]
        coloured = (pixels.max(axis=-1) - pixels.min(axis=-1)) > 0.25
        assert int(coloured.sum()) > 500, f"{name} shows no measured line"
    summary = (copy / "summary.md").read_text()
    assert "![throughput](throughput.png)" in summary and "![memory](memory.png)" in summary
    assert load_run(copy).plots == ["throughput.png", "memory.png"]


@pytest.mark.slow
def test_plot_without_matplotlib_fails_before_measuring(tmp_path: Path) -> None:
    env = shadow_package(tmp_path / "fake", "matplotlib", "raise ImportError('No module named matplotlib')\n")
    out = tmp_path / "run"
    result = run_cli(
        "run", "--quick", "--plot", "--dataset", "synthetic", "--out", str(out), env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--plot needs matplotlib" in result.stderr and "pip install matplotlib" in result.stderr
    assert not out.exists()
