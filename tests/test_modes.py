"""Execution modes: each runs the chapter's training another way, is validated against eager, or says why not."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.core.catalog import MODES
from bench.core.keys import CaseKey
from bench.core.plan import Options, plan
from bench.core.results import Run
from bench.core.schema import load_run
from bench.core.store import utc_now
from bench.engine.session import run_sweep
from bench.measure import modes
from bench.measure.data import Dataset, load_dataset
from bench.measure.efficiency import count_ops
from bench.measure.model import Training, build_training
from bench.measure.records import case_context
from bench.measure.workloads import Hooks, make_step, run_epochs
from bench.render.sections import throughput_table
from bench.render.summary import summary_markdown
from tests.conftest import SMALL_REAL_DIR, compile_runs_here, cuda_test, run_cli


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return load_dataset("fashion-mnist", SMALL_REAL_DIR)


class NoStepTraining(Training):
    """A mode that drops the optimizer step: it must be caught and reported invalid."""

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.forward_backward(inputs, labels)


@pytest.fixture
def no_step_mode(monkeypatch: pytest.MonkeyPatch) -> str:
    """Registers the test-only mode for this test (it is a fixture, not a user option)."""
    mode = modes.Mode(
        "no-step", lambda device, seed, **model: build_training(device, seed, kind=NoStepTraining, **model)
    )
    monkeypatch.setitem(modes.IMPLEMENTATIONS, "no-step", mode)
    return "no-step"


def test_every_named_mode_is_implemented_and_cuda_only_modes_say_so() -> None:
    assert set(MODES) <= set(modes.IMPLEMENTATIONS)
    for name in ("tf32", "cuda-graph"):
        assert modes.unsupported(name, "cpu") == "CUDA only"
    assert modes.unsupported("eager", "cpu") is None
    assert modes.unsupported("fused", "cpu") is None  # this build has a fused CPU SGD
    assert modes.unsupported("bf16", "cpu") is None


def test_compile_without_a_cpp_compiler_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++, c++ or clang++ anywhere on it
    reason = modes.unsupported("compile", "cpu")
    assert reason is not None and "C++ compiler (g++)" in reason


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fused", "bf16", "compile"])
def test_a_mode_computes_what_eager_computes(dataset: Dataset, name: str) -> None:
    if name == "compile" and not compile_runs_here("compile computes what eager computes"):
        return
    check = modes.validate_loss(name, "cpu", dataset, 64, steps=100)
    assert check.passed, check
    assert check.eager_loss < 2.0  # 100 steps of real learning from ~2.3
    if name == "bf16":
        assert check.difference > 0, "bf16 must not be bit-identical to float32: is autocast on?"


def test_a_mode_that_drops_the_optimizer_step_fails_validation(dataset: Dataset, no_step_mode: str) -> None:
    check = modes.validate_loss(no_step_mode, "cpu", dataset, 64, steps=100)
    assert not check.passed
    assert check.loss > check.eager_loss * 1.1  # it never learned


def test_bf16_runs_the_forward_in_bfloat16() -> None:
    training = modes.build("bf16", "cpu")
    assert training.forward(torch.randn(4, 784)).dtype == torch.bfloat16
    assert modes.build("eager", "cpu").forward(torch.randn(4, 784)).dtype == torch.float32
    fused = modes.build("fused", "cpu")
    assert fused.optimizer.defaults["fused"] is True


def test_compile_is_timed_apart_and_a_new_shape_shows_as_a_recompile(dataset: Dataset) -> None:
    if not compile_runs_here("compile is timed apart"):
        return
    torch._dynamo.reset()  # earlier tests' compiles would make the batch dimension dynamic already
    training = modes.build("compile", "cpu")
    step = make_step("train_step", dataset, "cpu", 32, training)
    assert training.compile_s > 0.05, "the warm-up's first call compiled, and was timed"
    compiled = training.compile_s
    graphs = modes.compiled_graphs()
    step()
    assert training.compile_s == compiled and modes.compiled_graphs() == graphs  # no compile in a timed call
    inputs = torch.randn(17, 784)
    training.step(inputs, torch.zeros(17, dtype=torch.long))  # a shape never seen: compiles again
    assert modes.compiled_graphs() > graphs and training.compile_s > compiled


@pytest.mark.slow
def test_the_tenth_compiled_model_is_still_compiled_not_eager() -> None:
    """Dynamo caches per code object, which every model's `step` shares; past its recompile limit (8) it
    ran the step in eager silently, so a long run's later `compile` cases timed eager."""
    if not compile_runs_here("the tenth compiled model"):
        return
    inputs, labels = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    eager = build_training("cpu", 0)
    eager_ops = count_ops(lambda: eager.step(inputs, labels))
    for _ in range(10):
        training = modes.build("compile", "cpu")
        before = modes.compiled_graphs()
        training.step(inputs, labels)
        assert modes.compiled_graphs() > before, "this model's first step compiled nothing"
    assert count_ops(lambda: training.step(inputs, labels)) < eager_ops  # fused kernels, not eager's ops


def test_an_epoch_in_compile_mode_compiles_every_shape_before_the_clock(dataset: Dataset) -> None:
    """1,000 images at batch 64 end with a batch of 40: the warm-up compiles that shape too."""
    if not compile_runs_here("an epoch in compile mode"):
        return
    training = modes.build("compile", "cpu")
    graphs: list[int] = []
    run_epochs(
        dataset, "cpu", 64, "resident", 1, training=training,
        hooks=Hooks(after_warm_up=lambda: graphs.append(modes.compiled_graphs())),
    )  # fmt: skip
    assert graphs and modes.compiled_graphs() == graphs[0], "a graph was compiled while an epoch was timed"


@pytest.mark.slow
def test_a_run_marks_an_invalid_mode_and_never_shows_it_as_a_number(
    dataset: Dataset, no_step_mode: str, tmp_path: Path
) -> None:
    options = Options(
        devices=("cpu",), batch_sizes=(64,), workloads=("train_step", "train"), modes=("eager", no_step_mode),
        passes=1, max_time=0.1, epochs=2, train_runs=1,
    )  # fmt: skip
    run = Run(
        "t1", utc_now(), {}, dataset.info, options, planned_cases=len(plan(options)), command_line="test"
    )
    run_sweep(run, options, dataset, tmp_path, say=lambda line: None)
    cases = {case.key: case for case in run.cases}
    step = cases[CaseKey("train_step", "cpu", 64, mode=no_step_mode)]
    train = cases[CaseKey("train", "cpu", 64, "resident", mode=no_step_mode)]
    for case in (step, train):
        assert case.status == "invalid" and case.samples_per_s is None and case.measured_rate
        assert any(not v.passed for v in case.validations), case.validations
    assert any(v.check == "accuracy" and not v.passed for v in train.validations)
    assert cases[CaseKey("train_step", "cpu", 64)].ok
    row = next(line for line in throughput_table(run).splitlines() if f"| {no_step_mode} " in line)
    assert "invalid" in row and "k " not in row  # no number in the throughput table
    summary = summary_markdown(run)
    assert "FAILED: loss after" in summary and "FAILED: final test accuracy" in summary
    assert load_run(tmp_path).cases[1].status == "invalid"  # what was saved says so too


@pytest.mark.slow
def test_modes_and_threads_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "run", "--devices", "cpu", "--modes", "eager,fused,tf32", "--threads", "1,2", "--workloads", "train_step",
        "--batch-sizes", "64", "--passes", "1", "--max-time", "0.1", "--dataset", "fashion-mnist",
        "--data-dir", str(SMALL_REAL_DIR), "--out", str(out), "--plot",
    )  # fmt: skip
    assert result.returncode == 0, result.output
    run = load_run(out)
    keys = {(case.key.mode, case.key.threads): case for case in run.cases}
    assert (out / "modes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # one line per mode, drawn
    assert set(keys) == {(m, t) for m in ("eager", "fused", "tf32") for t in (1, 2)}
    for threads in (1, 2):
        assert keys[("tf32", threads)].status == "skipped" and "CUDA only" in (
            keys[("tf32", threads)].error or ""
        )
        assert keys[("fused", threads)].ok and keys[("fused", threads)].validations[0].passed
    assert {"cpu/threads=1", "cpu/threads=2"} <= set(run.peaks)  # each count against its own peak
    summary = (out / "summary.md").read_text()
    assert "## Modes" in summary and "★" in summary and "| skipped" in summary


def test_a_case_runs_at_its_thread_count_and_puts_torchs_back() -> None:
    before = torch.get_num_threads()
    with case_context(CaseKey("train_step", "cpu", 64, threads=1)):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with case_context(CaseKey("train_step", "cpu", 64)):  # torch's own choice: untouched
        assert torch.get_num_threads() == before


def test_a_gpu_case_runs_with_its_device_as_the_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """On cuda:1 a CUDA graph captured on the current stream, which was cuda:0's: the case enters its own
    device (a recording stand-in for torch.cuda.device here; the real one below, on a GPU)."""
    entered: list[torch.device] = []

    @contextlib.contextmanager
    def device(where: torch.device) -> Iterator[None]:
        entered.append(where)
        yield

    monkeypatch.setattr(torch.cuda, "device", device)
    with case_context(CaseKey("train_step", "cuda:1", 64, mode="tf32")):
        assert entered == [torch.device("cuda:1")]
    with case_context(CaseKey("train_step", "cpu", 64)):
        assert entered == [torch.device("cuda:1")], "a CPU case sets no CUDA device"


@cuda_test
def test_a_case_on_the_last_gpu_makes_it_current() -> None:
    last = torch.cuda.device_count() - 1
    with case_context(CaseKey("train_step", f"cuda:{last}", 64)):
        assert torch.cuda.current_device() == last
        assert torch.cuda.current_stream().device == torch.device(f"cuda:{last}")


def test_unknown_modes_and_thread_counts_are_refused(tmp_path: Path) -> None:
    for args, message in ((["--modes", "turbo"], "unknown mode 'turbo'"), (["--threads", "0"], "at least 1")):
        result = run_cli("run", *args, "--out", str(tmp_path / "r"))
        assert result.returncode == 2 and message in result.stderr


def test_validation_trains_on_full_batches_only(dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 images at batch 64 end each epoch with a batch of 40: cuda-graph captured a second graph and
    compile recompiled for it, inside a check that needs one shape."""
    sizes: list[int] = []
    real_build = modes.build

    def recording(name: str, device: torch.device | str, seed: int = 0, **model: Any) -> Training:
        training = real_build(name, device, seed, **model)
        step = training.step
        training.step = lambda inputs, labels: sizes.append(len(labels)) or step(inputs, labels)  # type: ignore[method-assign]
        return training

    monkeypatch.setattr(modes, "build", recording)
    modes.validation_losses("eager", "cpu", dataset, 64, steps=40)  # past the first epoch's 15 full batches
    assert len(sizes) == 40 and set(sizes) == {64}


def test_compile_on_a_gpu_is_tried_once_on_x_plus_1_and_a_failure_is_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Triton imports long before it can build a kernel (its launcher needs a C compiler, Python.h and
    libcuda.so.1 at the first one): the compile mode tries `x + 1` once per device, and a failure is the
    reason its cells are skipped. Here torch.compile fails as a launcher build does, on the CPU."""
    calls: list[object] = []

    def failing_compile(function: object, **options: object) -> object:
        calls.append(function)

        def run(*args: object) -> object:
            raise RuntimeError("Failed to compile the Triton launcher: Python.h: No such file or directory")

        return run

    monkeypatch.setattr(modes, "COMPILE_PROBES", {})
    monkeypatch.setattr(torch, "compile", failing_compile)
    reason = modes.compile_probe(torch.device("cpu"))
    assert reason is not None and "Python.h: No such file" in reason and "C compiler, Python.h" in reason
    assert modes.compile_probe(torch.device("cpu")) == reason and len(calls) == 1, "probed once per device"
    # on a GPU, the compile mode's support is that probe's answer (Triton itself present)
    monkeypatch.setattr("torch.utils._triton.has_triton", lambda: True)
    monkeypatch.setattr(modes, "compile_probe", lambda device: f"probed {device}")
    assert modes.unsupported("compile", "cuda:1") == "probed cuda:1"


@cuda_test
def test_compile_runs_on_the_gpu_or_says_why() -> None:
    reason = modes.compile_probe(torch.device("cuda:0"))
    if reason is not None:
        pytest.skip(reason)
    assert modes.unsupported("compile", "cuda:0") is None


@cuda_test
@pytest.mark.parametrize("name", ["tf32", "cuda-graph", "compile", "bf16", "fused"])
def test_gpu_modes_compute_what_eager_computes(dataset: Dataset, name: str) -> None:
    reason = modes.unsupported(name, "cuda:0")
    if name == "compile" and reason is not None:  # Triton cannot build its kernels here: the probe says why
        pytest.skip(reason)
    assert reason is None
    check = modes.validate_loss(name, "cuda:0", dataset, 64, steps=100)
    assert check.passed, check


@cuda_test
def test_a_cuda_graph_replays_the_whole_step_and_each_epoch_copies_into_its_buffers(dataset: Dataset) -> None:
    graphed, eager = modes.build("cuda-graph", "cuda:0"), build_training("cuda:0")
    inputs, labels = torch.randn(64, 784, device="cuda:0"), torch.randint(0, 10, (64,), device="cuda:0")
    for _ in range(3):
        graphed.step(inputs, labels)
        eager.step(inputs, labels)
    for a, b in zip(graphed.net.parameters(), eager.net.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), "three replays must update the weights as three eager steps"
    timings = run_epochs(dataset, "cuda:0", 64, "resident", 1, training=graphed)
    assert timings[0].samples == len(dataset.train_labels)
    assert len(graphed._graphs) == 2  # the full batch and the ragged last one, captured before the clock
