"""`bench check` on this machine and on deliberately broken environments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.core.results import CheckLine
from bench.env.check import FAIL, INFO, PASS, WARN, CheckReport, _flavour_lines, run_check
from bench.env.check_cuda import _driver_build_lines, cuda_lines
from bench.env.nvml import collect_nvml
from bench.measure.probes import PROBES
from bench.render.check import check_table
from tests.conftest import requires_no_cuda, run_cli, shadow_package
from tests.fake_nvml import NVML_ERROR_GPU_IS_LOST, NVML_ERROR_NO_PERMISSION, FakeGpu, FakeNvml, shadow_body


@pytest.mark.slow
def test_check_passes_here_and_runs_real_computations() -> None:
    report = run_check(PROBES)
    verdicts = {line.name: line for line in report.lines}
    assert report.passed, check_table(report)
    for name in ("torch", "torchvision", "matmul cpu", "autograd cpu", "torchvision ops cpu"):
        assert verdicts[name].verdict == PASS, verdicts[name]
    assert "relative error" in verdicts["matmul cpu"].detail and "bound" in verdicts["matmul cpu"].detail
    for index in range(torch.cuda.device_count()):
        assert verdicts[f"matmul cuda:{index}"].verdict == PASS


@pytest.mark.slow
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


@pytest.mark.slow
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
    lines = {line.name: line for line in run_check(PROBES).lines}
    assert lines["cuda"].verdict == "SKIP" and lines["cuda"].detail.startswith("not available: ")
    assert lines["nvidia driver"].detail.startswith("not available: ")


@pytest.mark.slow
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


@pytest.mark.slow
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
    from bench.env.check import cudnn_version_text

    assert cudnn_version_text(90100) == "9.1.0"
    assert cudnn_version_text(92400) == "9.24.0"
    assert cudnn_version_text(8902) == "8.9.2"


def test_torchvision_built_for_another_cuda_is_a_warning() -> None:
    """Seen in the Docker build: torch 2.14.1+cu130 with torchvision 0.29.2+cu132."""
    from bench.env import collect as envmod
    from bench.env.check import _torchvision_lines

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
    from bench.env.check import build_mismatch_hint

    hint = build_mismatch_hint("2.13.0+cpu", "0.28.0")
    assert "right release but another build" in hint and "whl/cpu" in hint
    assert "PyPI's default" in build_mismatch_hint("2.14.1", "0.29.1+cu130")
    assert "--force-reinstall" in build_mismatch_hint("2.14.1+cu130", "0.29.1+cu130")


# --- NVML answers through tests/fake_nvml.py; torch's side is the `collect_cuda()` facts, written as data.

PARENT = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
WHOLE = "GPU-bbbbbbbb-0000-0000-0000-000000000000"
MIGS = [f"MIG-{index}aaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee" for index in range(7)]


def torch_cuda(*uuids: str, visible: str | None = None, built_with: str = "13.0") -> dict[str, Any]:
    """What `collect_cuda()` reports when torch sees devices with these UUIDs (torch prints them bare)."""
    devices = [
        {
            "index": index,
            "name": "NVIDIA H100 80GB HBM3",
            "capability": "9.0",
            "total_memory_bytes": 10 * 2**30,
            "multiprocessors": 16,
            "uuid": uuid.removeprefix("GPU-").removeprefix("MIG-"),
            "arch_covered": True,
            "arch_detail": "native kernels (sm_90)",
        }
        for index, uuid in enumerate(uuids)
    ]
    return {
        "built_with": built_with,
        "available": True,
        "device_count": len(devices),
        "devices": devices,
        "visible_devices_env": visible,
    }


DRIVER_570 = {
    "available": True,
    "driver_version": "570.133.20",
    "driver_cuda_version": "12.8",
    "device_count": 1,
}
NO_USABLE_GPU = {"built_with": "13.0", "available": False, "device_count": 0, "reason": "no usable GPU"}


def lines_by_name(cuda: dict[str, Any], fake: FakeNvml, require_cuda: bool = True) -> dict[str, CheckLine]:
    lines, _devices = cuda_lines({"cuda": cuda, "nvml": collect_nvml(fake)}, require_cuda=require_cuda)
    return {line.name: line for line in lines}


def test_mig_one_instance_of_seven_matched_by_uuid_passes() -> None:
    """CUDA gives a process one MIG instance: 1 torch device against NVML's 7 is right, not a fault."""
    lines = lines_by_name(torch_cuda(MIGS[2]), FakeNvml([FakeGpu(PARENT, mig=MIGS)]))
    count = lines["device count"]
    assert count.verdict == PASS, count
    assert "1 of 7 MIG instances, matched by UUID" in count.detail
    assert all(line.verdict != FAIL for line in lines.values())


def test_mig_a_torch_device_nvml_does_not_list_fails() -> None:
    lines = lines_by_name(
        torch_cuda("MIG-deadbeef-0000-0000-0000-000000000000"), FakeNvml([FakeGpu(PARENT, mig=MIGS)])
    )
    assert lines["device count"].verdict == FAIL
    assert "cuda:0" in lines["device count"].detail and "nvidia-smi -L" in lines["device count"].hint


@pytest.mark.parametrize(
    ("seen", "visible", "verdict"),
    [
        ((MIGS[0], WHOLE), None, PASS),  # unset: every whole GPU, and one MIG instance
        ((MIGS[0],), None, FAIL),  # unset, yet the whole GPU is missing
        ((MIGS[3],), MIGS[3], PASS),  # one MIG instance asked for by UUID
        ((MIGS[0],), MIGS[3], FAIL),  # not the instance asked for
        ((MIGS[3],), f"{MIGS[3]},{WHOLE[:12]}", FAIL),  # the whole GPU, named by a UUID prefix, is missing
        ((WHOLE,), f"{WHOLE[:12]},{MIGS[1]},{MIGS[2]}", FAIL),  # MIG instances listed, none seen
        ((MIGS[0],), "0", PASS),  # an index: CUDA's order, nothing NVML can check
        ((MIGS[0],), "GPU-nothing-here,1", PASS),  # CUDA stops at an entry that names nothing
    ],
)
def test_mig_beside_a_whole_gpu_follows_cuda_visible_devices(
    seen: tuple[str, ...], visible: str | None, verdict: str
) -> None:
    fake = FakeNvml([FakeGpu(PARENT, mig=MIGS), FakeGpu(WHOLE, name="NVIDIA L40S")])
    line = lines_by_name(torch_cuda(*seen, visible=visible), fake)["device count"]
    assert line.verdict == verdict, line
    if verdict == FAIL:
        assert "should be visible" in line.detail and "nvidia-smi" in line.hint
    if visible is None and verdict == PASS:
        assert "1 of 7 MIG instances and 1 of 1 whole GPU(s)" in line.detail


def test_without_mig_the_counts_still_decide() -> None:
    fake = FakeNvml([FakeGpu(PARENT), FakeGpu(WHOLE)])
    assert lines_by_name(torch_cuda(PARENT, WHOLE), fake)["device count"].verdict == PASS
    assert lines_by_name(torch_cuda(PARENT), fake)["device count"].verdict == FAIL
    assert lines_by_name(torch_cuda(PARENT, visible="0"), fake)["device count"].verdict == PASS


LOST = [
    FakeGpu(PARENT),
    FakeGpu(WHOLE, handle_error=NVML_ERROR_GPU_IS_LOST),
    FakeGpu("GPU-cccccccc-0000-0000-0000-000000000000", uuid_error=NVML_ERROR_NO_PERMISSION),
]


def test_a_lost_gpu_is_a_failure_with_a_hint() -> None:
    """One GPU NVML cannot read fails the check; it used to make NVML 'unavailable' and the count line SKIP."""
    lines = lines_by_name(torch_cuda(PARENT), FakeNvml(LOST), require_cuda=False)
    lost, denied = lines["nvml gpu 1"], lines["nvml gpu 2"]
    assert lost.verdict == FAIL and "GPU is lost" in lost.detail
    assert all(word in lost.hint for word in ("nvidia-smi", "dmesg", "nvidia-smi -r -i 1", "reboot"))
    assert denied.verdict == FAIL and "Insufficient Permissions" in denied.detail
    assert "/dev/nvidia" in denied.hint and "dmesg" in denied.hint
    assert lines["nvidia driver"].verdict == PASS and "2 of them unreadable" in lines["nvidia driver"].detail
    assert lines["device count"].verdict == PASS  # the readable GPU matches; the lost ones fail above
    report = CheckReport(list(lines.values()), {})
    assert not report.passed


def test_a_lost_gpu_fails_even_where_torch_found_no_gpu() -> None:
    lines = lines_by_name(NO_USABLE_GPU, FakeNvml(LOST), require_cuda=False)
    assert lines["cuda"].verdict == "SKIP" and lines["nvml gpu 1"].verdict == FAIL
    cpu_only = {**NO_USABLE_GPU, "built_with": None}
    lines = lines_by_name(cpu_only, FakeNvml(LOST), require_cuda=False)
    assert (
        lines["nvml gpu 1"].verdict == WARN and lines["nvml gpu 1"].hint
    )  # a CPU-only torch does not use it
    assert lines_by_name(cpu_only, FakeNvml(LOST), require_cuda=True)["nvml gpu 1"].verdict == FAIL


def test_a_mig_instance_nvml_cannot_open_fails() -> None:
    gpu = FakeGpu(PARENT, mig=MIGS[:2], mig_slot_errors={1: NVML_ERROR_GPU_IS_LOST})
    lines = lines_by_name(torch_cuda(MIGS[0]), FakeNvml([gpu]), require_cuda=False)
    assert lines["nvml gpu 0"].verdict == FAIL and "GPU 0 MIG slot 1" in lines["nvml gpu 0"].detail
    assert lines["device count"].verdict == PASS and "1 of 1 MIG instances" in lines["device count"].detail


@pytest.mark.slow
def test_check_cli_fails_on_a_lost_gpu(tmp_path: Path) -> None:
    """`bench check` with NVML answering from a fake machine whose second GPU is lost."""
    machine = f"FakeNvml([FakeGpu({PARENT!r}), FakeGpu({WHOLE!r}, handle_error=NVML_ERROR_GPU_IS_LOST)])"
    result = run_cli("check", "--json", env=shadow_package(tmp_path, "pynvml", shadow_body(machine)))
    assert "Traceback" not in result.output
    lines = {line["name"]: line for line in json.loads(result.stdout)["lines"]}
    assert lines["nvidia driver"]["verdict"] == PASS
    if torch.version.cuda:
        assert lines["nvml gpu 1"]["verdict"] == FAIL and result.returncode == 1
    else:
        assert lines["nvml gpu 1"]["verdict"] == WARN
    assert "GPU is lost" in lines["nvml gpu 1"]["detail"] and "dmesg" in lines["nvml gpu 1"]["hint"]


def flavour_facts(asked: str | None, cuda: str | None, version: str = "2.14.1") -> dict[str, Any]:
    requested = {"flavour": asked, "source": "BENCH_REQUESTED_TORCH_FLAVOUR"} if asked else None
    return {"torch": {"version": version, "cuda": cuda, "hip": None, "requested_flavour": requested}}


def test_a_cuda_build_other_than_the_one_asked_for_is_a_warning() -> None:
    """Seen: cu128 asked for, PyPI's fallback installed torch 2.14.1+cu130, which needs driver 580."""
    (line,) = _flavour_lines(flavour_facts("cu128", "13.0", "2.14.1+cu130"))
    assert line.verdict == WARN
    assert "asked for cu128" in line.detail and "CUDA 13.0" in line.detail
    assert "580.65.06" in line.hint and "installed cu130" in line.hint
    assert (
        "pip install --force-reinstall torch torchvision --index-url https://download.pytorch.org/whl/cu128"
        in (line.hint)
    )
    with_driver = {**flavour_facts("cu128", "13.0", "2.14.1+cu130"), "nvml": DRIVER_570}
    assert "this machine's is 570.133.20" in _flavour_lines(with_driver)[0].hint
    (cpu,) = _flavour_lines(flavour_facts("cpu", "13.0", "2.14.1+cu130"))
    assert cpu.verdict == WARN and "whl/cpu" in cpu.hint
    (gpu,) = _flavour_lines(flavour_facts("cu128", None, "2.14.1+cpu"))
    assert gpu.verdict == WARN and "CPU-only" in gpu.detail


def test_the_flavour_asked_for_passes_and_nothing_asked_is_silent() -> None:
    assert _flavour_lines(flavour_facts("cu128", "12.8"))[0].verdict == PASS
    assert _flavour_lines(flavour_facts("cpu", None))[0].verdict == PASS
    assert _flavour_lines(flavour_facts(None, "13.0")) == []
    assert _flavour_lines(flavour_facts("banana", "13.0"))[0].verdict == INFO


@pytest.mark.slow
def test_check_cli_warns_about_another_flavour() -> None:
    asked = "cpu" if torch.version.cuda else "cu128"
    result = run_cli("check", "--json", env={"BENCH_REQUESTED_TORCH_FLAVOUR": asked})
    lines = {line["name"]: line for line in json.loads(result.stdout)["lines"]}
    assert lines["torch flavour"]["verdict"] == WARN, lines["torch flavour"]
    assert f"whl/{asked}" in lines["torch flavour"]["hint"]
    assert json.loads(result.stdout)["env"]["torch"]["requested_flavour"]["flavour"] == asked


@pytest.mark.parametrize(
    ("nvml", "cuda", "verdict"),
    [
        (DRIVER_570, NO_USABLE_GPU, FAIL),  # a CUDA 13.0 build on a 12.8 driver, with a GPU
        ({**DRIVER_570, "device_count": 0}, NO_USABLE_GPU, WARN),  # no GPU to run it on
        ({**DRIVER_570, "driver_cuda_version": "12.4"}, {**NO_USABLE_GPU, "built_with": "12.8"}, FAIL),
        # same major, and torch's CUDA did start: minor version compatibility
        ({**DRIVER_570, "driver_cuda_version": "12.4"}, torch_cuda(PARENT, built_with="12.8"), WARN),
        ({**DRIVER_570, "driver_cuda_version": "13.0"}, torch_cuda(PARENT, built_with="12.8"), None),
        (DRIVER_570, {**NO_USABLE_GPU, "built_with": None}, None),  # CPU-only torch
    ],
)
def test_a_driver_older_than_the_build(
    nvml: dict[str, Any], cuda: dict[str, Any], verdict: str | None
) -> None:
    lines = _driver_build_lines(cuda, nvml)
    if verdict is None:
        assert lines == []
        return
    (line,) = lines
    assert line.verdict == verdict and line.hint
    assert "upgrade the NVIDIA driver" in line.hint
    if cuda["built_with"] == "13.0":
        assert "580.65.06 or later" in line.hint


def test_a_driver_older_than_the_build_through_nvml() -> None:
    fake = FakeNvml([FakeGpu(PARENT)], driver="570.133.20", cuda_version=12080)
    assert lines_by_name(NO_USABLE_GPU, fake, require_cuda=False)["driver vs build"].verdict == FAIL
