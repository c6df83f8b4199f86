"""Models as a dimension: the table, the keys and plan, the built-in builders at their tiny size, the
FLOP counting, and the user's own spec (good and bad) as `bench run --models` takes it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.core.errors import UsageError
from bench.core.keys import CaseKey, item_id, label, varied
from bench.core.models import MODELS, cannot_run, check_model_name, model_info
from bench.core.plan import Options, plan
from bench.core.schema import load_run
from bench.measure import modes
from bench.measure.data import Dataset, load_dataset
from bench.measure.efficiency import counted_flops_per_sample
from bench.measure.model import build_training
from bench.measure.userspec import check_user_model, user_builder
from bench.render.escape import markdown
from tests.conftest import REFERENCE_RUNS, ROOT, SMALL_REAL_DIR, run_cli

EXAMPLE = "examples/my_model.py:build"


@pytest.fixture(autouse=True)
def tiny_models(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every model at its tiny size, on one thread: convolutions on two threads of a busy 2-core
    machine ran 10-35 times slower (each op waits for the thread that lost its CPU)."""
    monkeypatch.setenv("BENCH_MODEL_SIZE", "tiny")
    monkeypatch.chdir(ROOT)  # the example's path is relative to the checkout
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return load_dataset("fashion-mnist", SMALL_REAL_DIR)


# --- the dimension ---------------------------------------------------------------------------------


def test_the_default_model_leaves_labels_ids_and_columns_as_they_were() -> None:
    plain = CaseKey("train_step", "cpu", 64)
    assert plain.model == "mlp" and label(plain) == "train_step · cpu · batch 64"
    assert item_id(plain, 0) == "train_step-step-cpu-64-pass1"
    assert varied([plain]) == []
    cnn = CaseKey("train_step", "cpu", 64, model="cnn")
    assert label(cnn) == "train_step · cpu · batch 64 · cnn"
    assert [d.field for d in varied([plain, cnn])] == ["model"]
    mine = CaseKey("forward", "cpu", 8, model="examples/my_model.py:build")
    assert item_id(mine, 1) == "forward-step-cpu-8-examples_my_model.py_build-pass2"


def test_results_files_without_a_model_read_as_mlp() -> None:
    run = load_run(REFERENCE_RUNS[0])
    assert run.cases and {case.key.model for case in run.cases} == {"mlp"}
    assert run.options.models == ("mlp",)


def test_each_model_is_planned_at_its_own_batch_sizes_unless_they_are_given() -> None:
    options = Options(("cpu",), (16, 64), ("forward",), models=("mlp", "transformer"), model_batch_sizes=True)
    sizes = {(key.model, key.batch_size) for key in plan(options)}
    assert sizes == {
        ("mlp", 16),
        ("mlp", 64),
        *(("transformer", b) for b in model_info("transformer").batch_sizes),
    }
    given = Options(("cpu",), (16,), ("forward",), models=("mlp", "transformer"))
    assert {(key.model, key.batch_size) for key in plan(given)} == {("mlp", 16), ("transformer", 16)}


def test_a_model_without_the_data_set_cannot_run_epochs_and_says_why() -> None:
    assert cannot_run("mlp", "epoch") is None and cannot_run("cnn", "train") is None
    assert cannot_run("resnet18", "train_step") is None
    reason = cannot_run("resnet18", "epoch")
    assert reason is not None and "needs a data set" in reason
    assert cannot_run(EXAMPLE, "train") is not None


@pytest.mark.parametrize("name", ["vgg", "file.py:", ":build", "file.py:not-a-name"])
def test_a_model_name_that_cannot_work_is_refused_by_name(name: str) -> None:
    with pytest.raises(UsageError):
        check_model_name(name)


# --- the built-in models -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=[pytest.mark.slow] if name == "resnet50" else []) for name in MODELS]
)
def test_every_built_in_model_trains_at_its_tiny_size_from_reproducible_weights(name: str) -> None:
    training = build_training("cpu", seed=1, model=name, batch_size=4)
    initial = [t.detach().clone() for t in training.net.state_dict().values()]
    if training.example is None:
        inputs, labels = torch.rand(4, 784) * 2 - 1, torch.randint(0, 10, (4,))
    else:
        inputs, labels = training.example
    assert len(inputs) == len(labels) == 4
    first = float(training.step(inputs, labels).detach())
    for _ in range(3):
        last = float(training.step(inputs, labels).detach())
    assert math.isfinite(first) and last < first, f"{name}: {first} -> {last}"
    again = build_training("cpu", seed=1, model=name, batch_size=4).net.state_dict().values()
    assert all(torch.equal(a, b) for a, b in zip(initial, again, strict=True))


def test_the_data_set_models_have_the_parameters_the_table_states() -> None:
    counts = {
        name: sum(p.numel() for p in build_training("cpu", model=name).net.parameters())
        for name in MODELS[:3]
    }
    assert counts == {"mlp": 50_890, "cnn": 61_706, "lstm": 82_186}
    for name, count in counts.items():
        assert f"{count:,}" in model_info(name).size or name == "mlp"


def test_flops_are_the_mlps_exact_count_and_counted_for_other_models() -> None:
    inputs, labels = torch.rand(8, 784), torch.randint(0, 10, (8,))
    mlp = build_training("cpu")
    assert counted_flops_per_sample(mlp, inputs, labels, backward=True) == 204_544
    cnn = build_training("cpu", model="cnn")
    conv1, conv2, linear = (
        2 * 25 * 6 * 28 * 28,
        2 * 6 * 25 * 16 * 10 * 10,
        2 * (400 * 120 + 120 * 84 + 84 * 10),
    )
    assert counted_flops_per_sample(cnn, inputs, labels, backward=False) == conv1 + conv2 + linear
    # backward: weight gradients of every layer, input gradients of all but the first (its input is the data)
    expected = (conv1 + conv2 + linear) + conv1 + 2 * conv2 + 2 * linear
    before = [p.detach().clone() for p in cnn.net.parameters()]
    assert counted_flops_per_sample(cnn, inputs, labels, backward=True) == expected
    assert all(torch.equal(a, b) for a, b in zip(before, cnn.net.parameters(), strict=True))
    # the LSTM's gates by hand (FlopCounterMode has no formula for its fused kernel): 28 rows of 28 pixels
    lstm = build_training("cpu", model="lstm")
    hidden = lstm.net.lstm.hidden_size
    gates_forward, head = 28 * 2 * 4 * hidden * (28 + hidden), 2 * hidden * 10
    assert counted_flops_per_sample(lstm, inputs, labels, backward=False) == gates_forward + head
    state_gradients = 28 * 2 * 4 * hidden * hidden  # the gradient to each previous state; none to the data
    expected = 2 * gates_forward + state_gradients + 3 * head  # the head: forward, weight and input gradients
    assert counted_flops_per_sample(lstm, inputs, labels, backward=True) == expected


def test_modes_wrap_any_model_and_are_validated_against_eager(dataset: Dataset) -> None:
    check = modes.validate_loss("bf16", "cpu", dataset, 2, model="transformer")
    assert check.steps == modes.SYNTHETIC_VALIDATION_STEPS and check.passed, check
    assert check.difference > 0, "bf16 must not be bit-identical to float32: is autocast on?"
    check = modes.validate_loss("fused", "cpu", dataset, 16, model="cnn", steps=20)
    assert check.passed, check


# --- the user's own model ----------------------------------------------------------------------------


def test_the_example_spec_builds_checks_and_validates(dataset: Dataset) -> None:
    check_user_model(EXAMPLE, 16)
    training = build_training("cpu", model=EXAMPLE, batch_size=16)
    assert isinstance(training.criterion, nn.MSELoss) and isinstance(training.optimizer, torch.optim.Adam)
    for mode in ("bf16", "fused"):
        assert modes.validate_loss(mode, "cpu", dataset, 16, model=EXAMPLE).passed


def spec_file(folder: Path, body: str) -> str:
    path = folder / "spec.py"
    path.write_text("import torch\nfrom torch import nn\nimport bench\n\n" + body)
    return f"{path}:build"


def test_the_short_form_gets_the_loss_its_targets_call_for(tmp_path: Path) -> None:
    name = spec_file(
        tmp_path, "def build(b):\n    return nn.Linear(3, 4), torch.randn(b, 3), torch.randint(0, 4, (b,))\n"
    )
    training = build_training("cpu", model=name, batch_size=5)
    assert isinstance(training.criterion, nn.CrossEntropyLoss) and isinstance(
        training.optimizer, torch.optim.SGD
    )


BAD_SPECS = {
    "missing function": ("def other(b):\n    pass\n", "has no function build"),
    "wrong return type": ("def build(b):\n    return [1, 2]\n", "returned a list"),
    "forward raising": (
        "def build(b):\n    return nn.Linear(3, 4), torch.randn(b, 5), torch.randint(0, 4, (b,))\n",
        "its forward raised",
    ),
    "inputs on the wrong device": (
        "def build(b):\n    return nn.Linear(3, 4), torch.randn(b, 3, device='meta'), torch.randint(0, 4, (b,))\n",
        "the inputs are on meta but the module's parameters on cpu",
    ),
    "build raising": (
        "def build(b):\n    raise ValueError('no such size')\n",
        "build(16) raised ValueError: no such size",
    ),
    "import raising": ("raise ImportError('needs timm')\n", "raised ImportError: needs timm"),
}


@pytest.mark.parametrize("problem", BAD_SPECS)
def test_a_bad_spec_is_one_clear_message_naming_it(tmp_path: Path, problem: str) -> None:
    body, expected = BAD_SPECS[problem]
    name = spec_file(tmp_path, body)
    user_builder.cache_clear()
    with pytest.raises(UsageError) as raised:
        check_user_model(name, 16)
    assert raised.value.message.startswith(f"--models {name}: ") and expected in raised.value.message


def test_a_bad_spec_stops_bench_run_before_anything_with_exit_2(tmp_path: Path) -> None:
    name = spec_file(tmp_path, BAD_SPECS["forward raising"][0])
    out = tmp_path / "run"
    result = run_cli("run", "--models", f"mlp,{name}", "--devices", "cpu", "--out", str(out))
    assert result.returncode == 2, result.output
    assert "its forward raised" in result.stderr and "Traceback" not in result.output
    assert not out.exists()
    missing = run_cli("run", "--models", "nowhere/model.py:build", "--devices", "cpu", "--out", str(out))
    assert missing.returncode == 2 and "there is no file nowhere/model.py" in missing.stderr


# --- end to end (slow) -------------------------------------------------------------------------------

TINY = {"BENCH_MODEL_SIZE": "tiny"}
DATA = ("--dataset", "fashion-mnist", "--data-dir", str(SMALL_REAL_DIR))


@pytest.fixture(scope="module")
def models_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three models (one with the data set, one synthetic, the user's example), eager and fused (bf16 is
    checked on small models above: this CPU emulates it, minutes for a convolutional network)."""
    out = tmp_path_factory.mktemp("models") / "run"
    result = run_cli(
        "run", "--models", f"cnn,resnet18,{EXAMPLE}", "--devices", "cpu", "--batch-sizes", "32",
        "--workloads", "train_step,epoch", "--loaders", "resident", "--modes", "eager,fused",
        "--passes", "1", "--max-time", "0.05", "--epoch-repeats", "1", "--threads", "1", *DATA, "--out", str(out),
        env=TINY,
    )  # fmt: skip
    assert result.returncode == 0, result.output
    return out


@pytest.mark.slow
def test_a_run_of_several_models_measures_each_and_skips_what_it_cannot_run(models_run: Path) -> None:
    run = load_run(models_run)
    cases = {case.key: case for case in run.cases}
    assert {key.model for key in cases} == {"cnn", "resnet18", EXAMPLE}
    for model in ("resnet18", EXAMPLE):
        epoch = cases[CaseKey("epoch", "cpu", 32, "resident", threads=1, model=model)]
        assert epoch.status == "skipped" and "needs a data set" in (epoch.error or "")
        step = cases[CaseKey("train_step", "cpu", 32, threads=1, model=model)]
        assert step.ok and step.flops_per_sample and step.parameters
    assert cases[CaseKey("epoch", "cpu", 32, "resident", threads=1, model="cnn")].ok
    for key, case in cases.items():
        if key.mode == "fused" and case.status != "skipped":
            (check,) = case.validations  # every mode is checked against eager, whatever the model
            # the CNN's momentum SGD amplifies even fused-vs-foreach rounding past 1e-3 in 200 steps
            assert check.passed or key.model == "cnn", (key, check)
    summary = (models_run / "summary.md").read_text()
    assert "## Models (what a sample costs)" in summary and "| model " in summary
    header = (models_run / "results.csv").read_text().splitlines()[0].split(",")
    assert "model" in header and "parameters" in header


@pytest.mark.slow
def test_compare_pairs_cases_by_model(models_run: Path) -> None:
    result = run_cli("compare", str(models_run), str(models_run))
    assert result.returncode == 0, result.output
    assert (
        f"train_step · cpu · batch 32 · {markdown(EXAMPLE)} · 1 threads"
        in result.stdout  # compare prints Markdown
        and "· resnet18" in result.stdout
    )


@pytest.mark.slow
def test_the_example_runs_data_parallel_on_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    result = run_cli(
        "run", "--nproc", "2", "--models", EXAMPLE, "--devices", "cpu", "--workloads", "train_step",
        "--batch-sizes", "8", "--passes", "1", "--max-time", "0.1", *DATA, "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.output
    cases = {case.key: case for case in load_run(out).cases}
    together = cases[CaseKey("train_step", "cpu", 8, threads=1, world_size=2, model=EXAMPLE)]
    assert together.ok and together.samples_per_unit == 16 and together.backend == "gloo"


def test_the_transformers_forward_is_counted_with_its_matmuls_not_its_fused_fast_path() -> None:
    """Without autograd nn.TransformerEncoder runs a fused kernel FlopCounterMode cannot see: the forward
    is counted with autograd on, so a training step is about three forwards (weights and inputs' gradients)."""
    training = build_training("cpu", model="transformer", batch_size=2)
    assert training.example is not None
    inputs, targets = training.example
    training.net.eval()  # as the forward workload leaves it: eval mode and no autograd take the fast path
    forward = counted_flops_per_sample(training, inputs, targets, backward=False)
    training.net.train()
    step = counted_flops_per_sample(training, inputs, targets, backward=True)
    assert 2.5 < step / forward < 3.5, (forward, step)
