"""Cases across processes: data-parallel and side by side through torchrun, and a rank that dies."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.analysis.metrics import case_figures, comm_share, per_rank_rates, scaling_efficiency
from bench.core.keys import CaseKey
from bench.core.results import ProcessFacts
from bench.core.schema import load_run
from bench.engine.launch import failure_cause, worker_args
from bench.measure.data import load_dataset
from bench.measure.loaders import ResidentBatches
from tests.conftest import ROOT, SMALL_REAL_DIR, by_key, cuda_test, run_cli

DATA = ("--dataset", "fashion-mnist", "--data-dir", str(SMALL_REAL_DIR))


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train_step, epoch and train at batch 64 on 2 gloo processes, side by side too, on the real slice."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    result = run_cli(
        "run", "--nproc", "2", "--side-by-side", "--devices", "cpu", "--workloads", "train_step,epoch,train",
        "--batch-sizes", "64", "--passes", "2", "--max-time", "0.6", "--epoch-repeats", "2", "--epochs", "3",
        "--train-runs", "1", *DATA, "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    return out


def test_data_parallel_cases_carry_every_rank_and_the_totals(two_process_run: Path) -> None:
    run = load_run(two_process_run)
    cases = by_key(run)
    step = cases[CaseKey("train_step", "cpu", 64, threads=1, world_size=2)]
    assert step.ok and step.backend == "gloo" and step.nnodes == 1
    assert step.samples_per_unit == 2 * 64  # the global batch: every rank's samples
    for record in step.passes:
        assert record.per_rank_s is not None and len(record.per_rank_s) == 2
        assert record.samples_s == [
            max(pair) for pair in zip(*record.per_rank_s, strict=True)
        ]  # the slowest rank
        assert record.comm_s is not None and record.comm_s > 0
    assert len(per_rank_rates(step)) == 2
    solo = cases[CaseKey("train_step", "cpu", 64, threads=1)]
    efficiency = scaling_efficiency(run, step)
    assert efficiency == pytest.approx(step.samples_per_s / (2 * solo.samples_per_s))
    share = comm_share(step)
    assert share is not None and 0 < share < 5
    link = run.processes.link_bus_bandwidth if run.processes else None
    assert link is not None and link > 1e6  # a 16 MiB all-reduce over gloo between the two ranks
    assert run.processes == ProcessFacts(world_size=2, nnodes=1, backend="gloo", threads_per_process=1,
                                         link_bus_bandwidth=link)  # fmt: skip
    # the gradient all-reduce as nccl-tests' bus bandwidth: its bytes (the model's 50,890 float32 weights)
    # over its time, times 2(n-1)/n = 1 for two ranks
    assert all(record.comm_bytes == 50_890 * 4 for record in step.passes)
    figures = case_figures(run, step)
    assert figures.all_reduce_bus_bytes_per_s == pytest.approx(
        statistics.median(50_890 * 4 / (r.comm_s or 1) for r in step.passes)
    )
    assert figures.all_reduce_link_share == pytest.approx(figures.all_reduce_bus_bytes_per_s / link)
    assert "bus bandwidth" in (two_process_run / "summary.md").read_text()


def test_a_data_parallel_epoch_sees_each_sample_once_across_the_ranks(two_process_run: Path) -> None:
    cases = by_key(load_run(two_process_run))
    epoch = cases[CaseKey("epoch", "cpu", 64, "resident", threads=1, world_size=2)]
    assert epoch.ok and epoch.samples_per_unit == 1000  # 500 a rank
    assert all(len(r.per_rank_s or []) == 2 and len(r.samples_s) == 1 for r in epoch.passes)


def test_data_parallel_training_ends_where_one_process_at_the_global_batch_ends(
    two_process_run: Path,
) -> None:
    cases = by_key(load_run(two_process_run))
    ddp = cases[CaseKey("train", "cpu", 64, "resident", threads=1, world_size=2)]
    reference = cases[CaseKey("train", "cpu", 128, "resident", threads=1)]
    assert ddp.ok and reference.ok
    (check,) = ddp.validations
    assert check.check == "accuracy" and check.passed
    assert check.value == ddp.final_accuracy and check.reference == reference.final_accuracy
    assert abs(ddp.final_accuracy - reference.final_accuracy) <= 0.01
    assert check.against == "one process at batch 128"
    summary = (two_process_run / "summary.md").read_text()
    assert "vs one process at batch 128's" in summary  # the check is shown, with what it was against


def test_side_by_side_copies_each_train_their_own(two_process_run: Path) -> None:
    run = load_run(two_process_run)
    cases = by_key(run)
    copies = cases[CaseKey("train_step", "cpu", 64, threads=1, side_by_side=2)]
    assert copies.ok and copies.key.world_size == 1 and copies.samples_per_unit == 128
    assert all(r.comm_s is None for r in copies.passes)  # no all-reduce: independent models
    summary = (two_process_run / "summary.md").read_text()
    assert "## Across processes" in summary and "side by side" in summary and "data-parallel" in summary
    assert "Processes: 2 started by torchrun" in summary


def test_the_resident_loader_shards_every_epoch_like_distributed_sampler() -> None:
    dataset = load_dataset("fashion-mnist", SMALL_REAL_DIR)
    shards = [
        ResidentBatches(dataset.train_images, dataset.train_labels, "cpu", seed=3, shard=(rank, 3))
        for rank in range(3)
    ]
    orders = [shard.shuffled() for shard in shards]
    assert [len(order) for order in orders] == [
        334,
        334,
        334,
    ]  # 1,000 padded to 1,002 as DistributedSampler does
    seen = torch.cat(orders)
    assert set(seen.tolist()) == set(range(1000)) and len(seen) - len(set(seen.tolist())) == 2
    again = torch.cat([shard.shuffled() for shard in shards])
    assert not torch.equal(seen, again)  # a new permutation every epoch, the same on every rank


def test_the_ranks_get_the_users_arguments_without_nproc(tmp_path: Path) -> None:
    argv = ["run", "--nproc", "2", "--devices", "cpu", "--nproc=3", "--side-by-side"]
    assert worker_args(argv, tmp_path, resume=False) == [
        "--devices",
        "cpu",
        "--side-by-side",
        "--out",
        str(tmp_path),
    ]
    assert worker_args(argv, tmp_path, resume=True)[-1] == "--resume"


def test_the_root_cause_names_the_rank_from_torchruns_own_summary(tmp_path: Path) -> None:
    output = (
        "Failures:\n[1]:\n  rank      : 0 (local_rank: 0)\n  exitcode  : -15 (pid: 11)\n"
        "------\nRoot Cause (first observed failure):\n[0]:\n  time      : now\n  host      : localhost\n"
        "  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 12)  (SIGKILL)\n  error_file: <N/A>\n"
        "  traceback : Signal 9 (SIGKILL) received by PID 12\n=========\n"
    )
    assert failure_cause(output, tmp_path) == ("rank 1 killed by SIGKILL", False)
    (tmp_path / "rank-1.json").write_text(
        '{"rank": 1, "error": "OutOfMemoryError: CUDA out of memory", "oom": true}'
    )
    assert failure_cause(output, tmp_path) == ("rank 1 failed: OutOfMemoryError: CUDA out of memory", True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nproc", "2", "--modes", "compile"], "cases across processes run eager"),
        (["--nproc", "2", "--workloads", "forward"], "--nproc runs train_step, epoch, train"),
        (["--nproc", "2", "--threads", "1"], "cannot be combined with --nproc"),
        (["--side-by-side"], "needs --nproc 2 or more"),
        (["--nproc", "0"], "must be at least 1"),
        (["--nproc", "2", "--devices", "cuda:0"], "give cpu (gloo) or cuda"),
    ],
)
def test_options_that_cannot_run_across_processes_are_refused(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = run_cli("run", *args, "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and message in result.stderr, result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_rank_killed_mid_case_is_an_error_cell_and_the_run_goes_on(tmp_path: Path) -> None:
    """SIGKILL to rank 1 during a data-parallel case: within 60 s that case is an error naming the rank,
    and the cases after it are measured."""
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--nproc", "2", "--devices", "cpu", "--workloads", "train_step",
         "--batch-sizes", "64,32", "--passes", "1", "--max-time", "30", "--retry-contended", "0", *DATA,
         "--out", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[str] = []
    try:
        for line in process.stderr:
            lines.append(line)
            if "batch 64 · 1 threads · 2 processes ..." in line:
                break
        time.sleep(2)  # inside the case's timed rounds (30 s of them)
        victim = next(
            (
                pid
                for pid in map(int, (p.name for p in Path("/proc").glob("[0-9]*")))
                if _is_rank(pid, 1, out)
            ),
            None,
        )
        assert victim is not None, "".join(lines)
        killed, recovered = time.monotonic(), float("inf")
        os.kill(victim, signal.SIGKILL)
        for line in process.stderr:
            lines.append(line)
            if "the case is recorded as failed" in line:
                recovered = time.monotonic() - killed
                break
        _stdout, rest = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = "".join(lines) + rest
    assert recovered <= 60, output
    assert process.returncode == 1, output  # a case errored: the run says so in its status
    run = load_run(out)
    cases = by_key(run)
    failed = cases[CaseKey("train_step", "cpu", 64, threads=1, world_size=2)]
    assert failed.status == "error" and "rank 1 killed by SIGKILL" in (failed.error or "")
    later = cases[CaseKey("train_step", "cpu", 32, threads=1, world_size=2)]
    assert later.ok and cases[CaseKey("train_step", "cpu", 32, threads=1)].ok
    assert run.state == "complete" and not run.partial


def _is_rank(pid: int, rank: int, out: Path) -> bool:
    """Whether `pid` is the torchrun worker of `rank` for the run writing to `out`."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return (
        f"RANK={rank}".encode() in environ
        and str(out).encode() in command
        and b"torch.distributed.run" not in command
    )


@cuda_test
def test_nccl_data_parallel_with_one_gpu_per_process(tmp_path: Path) -> None:
    gpus = torch.cuda.device_count()
    if gpus < 2:
        pytest.skip(f"NCCL across processes needs one GPU per process: 2 or more, this machine has {gpus}")
    out = tmp_path / "run"
    result = run_cli(
        "run", "--nproc", str(gpus), "--devices", "cuda", "--workloads", "train_step,epoch", "--batch-sizes", "256",
        "--passes", "1", "--max-time", "0.5", "--epoch-repeats", "1", *DATA, "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    case = by_key(load_run(out))[CaseKey("train_step", "cuda", 256, world_size=gpus)]
    assert case.ok and case.backend == "nccl" and len(case.passes[0].per_rank_s or []) == gpus
