"""`bench run` end to end, and bad input: a clear message, exit status 2, nothing measured or written."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.cli.args import parse_batch_sizes
from bench.core.errors import UsageError
from bench.core.schema import load_run
from bench.core.stats import summarize
from tests.conftest import ROOT, SMALL_RUN_ARGS, load_json, requires_no_cuda, run_cli


def test_small_run_writes_every_file(small_run: Path) -> None:
    names = {path.name for path in small_run.iterdir()}
    assert {"results.json", "results.csv", "summary.md", "pytest-benchmark.json"} <= names
    data = load_json(small_run / "results.json")
    assert data["state"] == "complete" and data["planned_cases"] == len(data["cases"]) == 2 * (3 + 2 + 1)


@pytest.mark.slow
def test_the_results_line_lists_every_file_written(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "run", "--devices", "cpu", "--workloads", "forward", "--batch-sizes", "8", "--passes", "1",
        "--max-time", "0.01", "--dataset", "synthetic", "--data-dir", str(tmp_path / "data"), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("Results:"))
    for name in ("summary.md", "results.csv", "results.json", "pytest-benchmark.json"):
        assert name in line and (out / name).is_file()


def test_pytest_benchmark_json_is_the_engines_own(small_run: Path) -> None:
    raw = load_json(small_run / "pytest-benchmark.json")
    assert "machine_info" in raw and raw["machine_info"]["torch_bench"]["torch"]
    names = {bench["name"] for bench in raw["benchmarks"]}
    assert any("train_step-step-cpu-32" in name for name in names)
    step = next(
        c for c in load_run(small_run).cases if c.key.workload == "train_step" and c.key.batch_size == 32
    )
    for record in step.passes:  # each pass is the engine's own record of that pass, quartiles included
        engine = next(
            b
            for b in raw["benchmarks"]
            if b["name"].endswith(f"train_step-step-cpu-32-pass{record.index + 1}]")
        )
        assert engine["stats"]["data"] == record.samples_s
        assert engine["stats"]["iterations"] == record.calls_per_round
        assert engine["options"]["min_time"] == record.min_round_s
        assert summarize(record.samples_s).iqr == pytest.approx(engine["stats"]["iqr"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-sizes", "0"], "batch size 0 must be at least 1"),
        (["--batch-sizes", "16,abc"], "batch size 'abc' is not a whole number"),
        (["--batch-sizes", "-4"], "must be at least 1"),
        (["--workloads", "forward,backward"], "unknown workload 'backward'"),
        (["--loaders", "fast"], "unknown loader 'fast'"),
        (["--devices", "gpu"], "unknown device 'gpu'"),
        (["--devices", "cpu,cuda:7"], "cuda:7"),
        (["--epochs", "0"], "--epochs 0 must be at least 1"),
        (["--passes", "0"], "--passes 0 must be at least 1"),
        (["--target-accuracy", "80"], "must be a fraction"),
        (["--train-runs", "0"], "--train-runs 0 must be at least 1"),
        (["--batch-sizes="], "--batch-sizes is empty"),
        (["--workloads", ""], "--workloads is empty"),
        (["--loaders", " , "], "--loaders is empty"),
        (["--devices="], "--devices is empty"),
    ],
)
def test_bad_options_fail_fast_and_write_nothing(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(["run", *args, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err
    assert not out.exists()


def test_unwritable_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", "--quick", "--dataset", "synthetic", "--out", str(blocker / "run")]) == 2
    assert "cannot write results to" in capsys.readouterr().err


def test_missing_dataset_without_download(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--quick",
            "--dataset",
            "mnist",
            "--no-download",
            "--data-dir",
            str(tmp_path),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "MNIST not found" in err and "--dataset synthetic" in err
    assert not out.exists()


def test_corrupt_dataset_names_the_file(
    tmp_path: Path, small_real_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for path in small_real_dir.iterdir():
        (data / path.name).write_bytes(path.read_bytes())
    broken = data / "train-labels-idx1-ubyte.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    code = main(
        [
            "run",
            "--quick",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(data),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(broken) in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@requires_no_cuda
def test_check_runs_before_anything_else(tmp_path: Path) -> None:
    """`run --check`: the install check comes first, so a CUDA-less machine stops there (exit 1),
    before the missing data set would be noticed."""
    out = tmp_path / "run"
    result = run_cli(
        "run", "--check", "--require", "cuda", "--dataset", "mnist", "--no-download",
        "--data-dir", str(tmp_path), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 1, result.output
    assert "no usable CUDA device" in result.stdout and "nothing was measured" in result.stderr
    assert "MNIST not found" not in result.stderr
    assert not out.exists()


def test_parse_batch_sizes_keeps_order_and_drops_repeats() -> None:
    assert parse_batch_sizes("64, 16,64") == (64, 16)
    with pytest.raises(UsageError, match="is empty"):
        parse_batch_sizes(",")


def test_an_unknown_option_gets_the_commands_own_usage() -> None:
    result = run_cli("run", "--bogus")
    assert result.returncode == 2
    assert "usage: bench run" in result.stderr and "unrecognized arguments: --bogus" in result.stderr


CHECK_BEFORE_TORCH = """
import sys
from bench.cli import main
code = main(sys.argv[1:])
print("torch imported:", "torch" in sys.modules, "exit", code)
"""


@pytest.mark.parametrize(
    "args", [["--batch-sizes", "0"], ["--workloads", "nope"], ["--epochs", "0"], ["--batch-sizes="]]
)
def test_bad_values_are_refused_before_torch_is_imported(args: list[str], tmp_path: Path) -> None:
    """A typo costs a fraction of a second: the values are checked before the 2-5 s import of torch."""
    process = subprocess.run(
        [sys.executable, "-c", CHECK_BEFORE_TORCH, "run", *args, "--out", str(tmp_path / "r")],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )  # fmt: skip
    assert "torch imported: False exit 2" in process.stdout, process.stdout + process.stderr


def test_help_states_every_default() -> None:
    result = run_cli("run", "--help")
    text = " ".join(result.stdout.split())
    for option in (
        "--devices",
        "--batch-sizes",
        "--workloads",
        "--dataset",
        "--data-dir",
        "--epochs",
        "--train-runs",
        "--epoch-repeats",
        "--passes",
        "--max-time",
        "--out",
        "--quick",
    ):
        start = text.index(f" {option} ")
        assert "default" in text[start : start + 400], option
    # the profiles' values, written from their one definition
    from bench.core.plan import FULL, QUICK

    assert f"default: {FULL.passes}; with --quick: {QUICK.passes}" in text
    assert (
        f"default: {','.join(map(str, FULL.batch_sizes))}; with --quick: {','.join(map(str, QUICK.batch_sizes))}"
        in text
    )


@pytest.mark.slow
def test_synthetic_run_is_labelled_everywhere(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "run",
        *SMALL_RUN_ARGS,
        "--workloads",
        "train",
        "--batch-sizes",
        "500",
        "--epochs",
        "1",
        "--dataset",
        "synthetic",
        "--data-dir",
        str(tmp_path / "data"),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.output
    summary = (out / "summary.md").read_text()
    assert "SYNTHETIC" in summary and "accuracy is not meaningful" in summary
    assert "SYNTHETIC" in result.stdout and "**SYNTHETIC**" not in result.stdout  # a plain console
    training = summary.split("## Training to accuracy")[1].split("##")[0]
    assert "not meaningful" in training and "100.0%" not in training
    assert json.loads((out / "results.json").read_text())["dataset"]["synthetic"] is True
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows and all(row["synthetic"] == "True" and row["dataset"] == "synthetic" for row in rows)
