"""`bench check` on this machine and on deliberately broken environments."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.check import FAIL, PASS, run_check
from bench.report import check_table
from tests.conftest import requires_no_cuda, run_cli, shadow_package


def test_check_passes_here_and_runs_real_computations() -> None:
    report = run_check()
    verdicts = {line.name: line for line in report.lines}
    assert report.passed, check_table(report)
    for name in ("torch", "torchvision", "matmul cpu", "autograd cpu", "torchvision ops cpu"):
        assert verdicts[name].verdict == PASS, verdicts[name]
    assert "relative error" in verdicts["matmul cpu"].detail and "bound" in verdicts["matmul cpu"].detail
    for index in range(torch.cuda.device_count()):
        assert verdicts[f"matmul cuda:{index}"].verdict == PASS


def test_check_cli_table_and_json() -> None:
    table = run_cli("check")
    assert table.returncode == 0, table.output
    assert "PASS: this install works" in table.stdout
    assert "Traceback" not in table.output
    machine = run_cli("check", "--json")
    assert machine.returncode == 0
    data = json.loads(machine.stdout)
    assert data["verdict"] == "pass"
    assert {"name", "verdict", "detail", "hint"} <= set(data["lines"][0])
    assert data["env"]["torch"]["version"] == torch.__version__


@requires_no_cuda
def test_require_cuda_fails_without_a_gpu_and_says_why() -> None:
    result = run_cli("check", "--require", "cuda")
    assert result.returncode == 1
    assert "no usable CUDA device" in result.stdout
    assert "FAIL" in result.stdout and "Traceback" not in result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("cuda "))
    assert "install" in line  # the hint: a driver or a CUDA build


@requires_no_cuda
def test_missing_gpu_is_not_available_not_a_failure() -> None:
    lines = {line.name: line for line in run_check().lines}
    assert lines["cuda"].verdict == "SKIP" and lines["cuda"].detail.startswith("not available: ")
    assert lines["nvidia driver"].detail.startswith("not available: ")


def test_mismatched_torchvision_fails_with_a_hint(tmp_path: Path) -> None:
    """A torchvision that dies on import the way a mismatched build does (the error seen on these machines)."""
    env = shadow_package(
        tmp_path,
        "torchvision",
        'raise RuntimeError("operator torchvision::nms does not exist")\n__version__ = "0.0"\n',
    )
    result = run_cli("check", env=env)
    assert result.returncode == 1, result.output
    assert "operator torchvision::nms does not exist" in result.stdout
    assert "reinstall" in result.stdout  # the hint says what to do
    assert "FAIL: " in result.stdout and "Traceback" not in result.output


def test_torchvision_without_compiled_ops_fails_the_ops_check(tmp_path: Path) -> None:
    """torchvision imports, but its compiled nms is missing: the functional check catches it."""
    body = (
        "import types\n__version__ = '0.29.1'\n"
        "def _nms(*args, **kwargs):\n    raise RuntimeError('operator torchvision::nms does not exist')\n"
        "ops = types.SimpleNamespace(nms=_nms)\n"
    )
    result = run_cli("check", "--json", env=shadow_package(tmp_path, "torchvision", body))
    assert result.returncode == 1
    lines = {line["name"]: line for line in json.loads(result.stdout)["lines"]}
    assert lines["torchvision ops cpu"]["verdict"] == FAIL
    assert "mismatched pair" in lines["torchvision ops cpu"]["hint"]


def test_cudnn_versions_of_both_numbering_schemes() -> None:
    from bench.check import cudnn_version_text

    assert cudnn_version_text(90100) == "9.1.0"
    assert cudnn_version_text(92400) == "9.24.0"
    assert cudnn_version_text(8902) == "8.9.2"


def test_torchvision_built_for_another_cuda_is_a_warning() -> None:
    """Seen in the Docker build: torch 2.14.1+cu130 with torchvision 0.29.2+cu132."""
    from bench import env as envmod
    from bench.check import _torchvision_lines

    facts = {
        "torch": {"version": "2.14.1+cu130"},
        "torchvision": {"available": True, "version": "0.29.2+cu132"},
    }
    (line,) = _torchvision_lines(facts)
    assert line.verdict == "WARN" and "cu132" in line.detail and "cu130" in line.detail
    facts["torchvision"]["version"] = "0.29.1+cu130"
    assert _torchvision_lines(facts)[0].verdict == "PASS"
    assert envmod.expected_torchvision("2.14.1+cu130") == "0.29"


def test_a_torchvision_of_the_right_release_but_another_build_is_named_as_such() -> None:
    from bench.check import build_mismatch_hint

    hint = build_mismatch_hint("2.13.0+cpu", "0.28.0")
    assert "right release but another build" in hint and "whl/cpu" in hint
    assert "PyPI's default" in build_mismatch_hint("2.14.1", "0.29.1+cu130")
    assert "--force-reinstall" in build_mismatch_hint("2.14.1+cu130", "0.29.1+cu130")
