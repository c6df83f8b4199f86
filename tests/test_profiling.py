"""`--profile`: a Chrome trace and an op table per case, after its timed passes; `compare` of two
profiled runs names the ops whose time changed most."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bench.analysis.profile_diff import OpChange, op_changes
from bench.core.schema import load_run
from tests.conftest import run_cli

ARGS = ("--devices", "cpu", "--dataset", "synthetic", "--workloads", "forward,train_step", "--batch-sizes", "32",
        "--passes", "1", "--max-time", "0.05")  # fmt: skip


def test_the_ops_that_changed_most_come_first_either_way() -> None:
    a = [{"op": "aten::addmm", "self_cpu_us": "100", "self_device_us": "0"},
         {"op": "aten::relu", "self_cpu_us": "10", "self_device_us": "0"},
         {"op": "aten::mm", "self_cpu_us": "50", "self_device_us": "0"}]  # fmt: skip
    b = [{"op": "aten::addmm", "self_cpu_us": "40", "self_device_us": "0"},
         {"op": "aten::relu", "self_cpu_us": "12", "self_device_us": "0"},
         {"op": "aten::_fused_sgd", "self_cpu_us": "30", "self_device_us": "0"}]  # fmt: skip
    assert op_changes(a, b, top=3) == [
        OpChange("aten::addmm", 100, 40), OpChange("aten::mm", 50, 0), OpChange("aten::_fused_sgd", 0, 30),
    ]  # fmt: skip
    on_gpu = [{"op": "aten::mm", "self_cpu_us": "5", "self_device_us": "80"}]
    assert op_changes(on_gpu, [{"op": "aten::mm", "self_cpu_us": "5", "self_device_us": "20"}]) == [
        OpChange("aten::mm", 80, 20)  # device time where the profile has it, not the launch's host time
    ]


@pytest.mark.slow
def test_profiled_runs_leave_a_trace_and_an_op_table_per_case_and_compare_reads_them(tmp_path: Path) -> None:
    data = ("--data-dir", str(tmp_path / "data"))
    for name in ("a", "b"):
        result = run_cli("run", *ARGS, *data, "--profile", "--out", str(tmp_path / name))
        assert result.returncode == 0, result.output
    run = load_run(tmp_path / "a")
    assert len(run.cases) == 2
    for case in run.cases:
        trace, table = (tmp_path / "a" / path for path in case.profiles)
        assert json.loads(trace.read_text())["traceEvents"]  # what chrome://tracing and Perfetto load
        rows = list(csv.DictReader(table.open()))
        assert rows and any(row["op"] == "aten::addmm" and int(row["calls"]) >= 5 for row in rows)
    plain = run_cli("run", *ARGS, *data, "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0 and not (tmp_path / "plain" / "profiles").exists()
    compared = run_cli("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert compared.returncode == 0, compared.output
    assert "Ops whose time changed most" in compared.output and "aten::" in compared.output
    assert (
        "Ops whose time changed most"
        not in run_cli("compare", str(tmp_path / "a"), str(tmp_path / "plain")).output
    )


@pytest.mark.slow
def test_under_nproc_every_rank_profiles_the_data_parallel_steps_together(tmp_path: Path) -> None:
    """`--nproc 2 --profile`: each rank leaves its own trace and op table, named with its rank, and the
    op tables hold the gradient all-reduce that the ranks ran together."""
    out = tmp_path / "ranks"
    result = run_cli(
        "run", "--nproc", "2", "--devices", "cpu", "--dataset", "synthetic", "--data-dir", str(tmp_path / "data"),
        "--workloads", "train_step", "--batch-sizes", "32", "--passes", "1", "--max-time", "0.1", "--profile",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    (case,) = [c for c in load_run(out).cases if c.key.world_size == 2]
    assert sorted(Path(p).name.rsplit("-", 1)[1] for p in case.profiles) == [
        "rank0.ops.csv", "rank0.trace.json", "rank1.ops.csv", "rank1.trace.json",
    ]  # fmt: skip
    for path in case.profiles:
        if path.endswith(".trace.json"):
            assert json.loads((out / path).read_text())["traceEvents"]
        else:
            ops = [row["op"] for row in csv.DictReader((out / path).open())]
            assert any("allreduce" in op.lower().replace("_", "") for op in ops), ops[:20]
