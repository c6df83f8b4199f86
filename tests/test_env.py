"""The probes: each returns facts or a reason, parsers work on real files laid out like /proc and /sys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from bench.env import collect as env
from bench.env import contention
from bench.env import nvml as nvml_module
from tests.fake_nvml import (
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION,
    FakeGpu,
    FakeNvml,
)


def test_collect_all_has_every_area_and_never_raises() -> None:
    facts = env.collect_all()
    for area in env.COLLECTORS:
        assert isinstance(facts[area], dict), area
    assert facts["torch"]["version"] == torch.__version__
    assert facts["cpu"]["torch_threads"] == torch.get_num_threads()
    assert facts["cpu"]["logical_cores"] >= 1
    assert facts["memory"]["total_bytes"] > 0


def test_guard_turns_an_exception_into_a_reason() -> None:
    def broken() -> dict:
        raise OSError("no such thing")

    assert env._guard(broken) == {"available": False, "reason": "OSError: no such thing"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_no_gpu_is_a_reason_not_an_error() -> None:
    cuda = env.collect_cuda()
    assert cuda["available"] is False and cuda["built_with"] == torch.version.cuda
    # a CUDA build is told apart from a CPU-only one: the two need different fixes
    expected = "no usable GPU was found" if torch.version.cuda else "is a CPU-only build"
    assert expected in cuda["reason"], cuda["reason"]


def _nvml_library_loads() -> bool:
    """Whether the driver's NVML library is on this machine (nvidia-ml-py loads exactly this name)."""
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def test_nvml_reports_driver_or_a_reason() -> None:
    """What NVML says agrees with this machine: no library is 'no NVIDIA driver', a usable GPU is a driver."""
    nvml = nvml_module.collect_nvml()
    library = _nvml_library_loads()
    if not library:
        assert nvml["available"] is False, nvml
        assert nvml["reason"].startswith("no NVIDIA driver") and "libnvidia-ml.so.1" in nvml["reason"]
    elif nvml["available"]:
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?", nvml["driver_version"]), nvml["driver_version"]
        assert nvml["device_count"] == len(nvml["devices"]) + sum(
            1 for f in nvml["failed_devices"] if not f["mig"]
        )
    else:  # the library is there but NVML does not start: the kernel driver, say
        assert "driver" in nvml["reason"] or "NVML failed to start" in nvml["reason"], nvml["reason"]
    if library and torch.cuda.is_available():  # torch runs on a GPU: its driver answers NVML too
        assert nvml["available"] is True and nvml["device_count"] >= 1, nvml


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_quota(tmp_path: Path, files: dict[str, str], expected: float | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert env.cgroup_cpu_quota(tmp_path) == expected


def test_cgroup_memory_limit(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("max\n")
    assert env.cgroup_memory_limit(tmp_path) is None
    (tmp_path / "memory.max").write_text("1073741824\n")
    assert env.cgroup_memory_limit(tmp_path) == 2**30


def test_cpu_model_and_governor_from_files(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text("processor : 0\nmodel name\t: Example CPU @ 3.0GHz\n")
    assert env.cpu_model(tmp_path / "cpuinfo") == "Example CPU @ 3.0GHz"
    governor = tmp_path / "cpu0" / "cpufreq" / "scaling_governor"
    governor.parent.mkdir(parents=True)
    governor.write_text("performance\n")
    assert env.cpu_governor(tmp_path) == "performance"
    assert env.cpu_governor(tmp_path / "missing") is None


def test_container_markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_IMAGE", raising=False)
    assert env.collect_container(tmp_path)["in_container"] is False
    (tmp_path / ".dockerenv").write_text("")  # Docker's marker alone, no image variable
    facts = env.collect_container(tmp_path)
    assert facts["in_container"] is True and facts["markers"] == [".dockerenv"] and facts["image"] is None
    podman = tmp_path / "podman"
    (podman / "run").mkdir(parents=True)
    (podman / "run" / ".containerenv").write_text("")
    assert env.collect_container(podman)["markers"] == ["run/.containerenv"]
    kubernetes = tmp_path / "kubernetes"
    (kubernetes / "proc" / "1").mkdir(parents=True)
    (kubernetes / "proc" / "1" / "cgroup").write_text("0::/kubepods/besteffort/pod1234\n")
    assert env.collect_container(kubernetes) == {**facts, "markers": [], "in_container": True}
    (kubernetes / "proc" / "1" / "cgroup").write_text("0::/user.slice/user-1000.slice\n")
    assert env.collect_container(kubernetes)["in_container"] is False
    monkeypatch.setenv("BENCH_IMAGE", "torch-bench:cpu")
    facts = env.collect_container(tmp_path / "kubernetes")
    assert facts["in_container"] is True and facts["image"] == "torch-bench:cpu"


@pytest.mark.parametrize(
    ("capability", "arch_list", "covered", "how"),
    [
        ((9, 0), ["sm_80", "sm_90"], True, "native"),
        ((9, 0), ["sm_80", "sm_90a"], True, "native"),
        ((8, 6), ["sm_80", "sm_90"], True, "binary-compatible kernels (sm_80)"),
        ((12, 0), ["sm_90", "compute_90"], True, "PTX"),
        ((12, 0), ["sm_80", "sm_90"], False, "not covered"),
        ((7, 0), ["sm_75", "sm_80"], False, "not covered"),
        ((10, 0), ["sm_90", "sm_100"], True, "native"),
    ],
)
def test_arch_coverage(capability: tuple[int, int], arch_list: list[str], covered: bool, how: str) -> None:
    result, detail = env.arch_coverage(capability, arch_list)
    assert result is covered
    assert how in detail


def test_expected_torchvision_pairs() -> None:
    assert env.expected_torchvision("2.14.1+cu130") == "0.29"
    assert env.expected_torchvision("2.9.1") == "0.24"
    assert env.expected_torchvision("1.13.0") is None


def test_throttle_reasons_are_named() -> None:
    assert nvml_module.decode_throttle_reasons(None) is None
    assert nvml_module.decode_throttle_reasons(0) == []
    assert nvml_module.decode_throttle_reasons(0x1 | 0x40) == ["gpu_idle", "hw_thermal_slowdown"]


def test_load_probe_sees_a_busy_process() -> None:
    import subprocess
    import sys

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    # 10%: on a machine already busy (the README's test command must pass there) the spinner gets a share
    # of a CPU, not all of it
    try:
        load = contention.collect_load(sample_s=0.5, busy_percent=10)
    finally:
        spinner.kill()
    assert any(process["pid"] == spinner.pid for process in load["busy_processes"])
    assert load["loadavg"] is not None and len(load["loadavg"]) == 3


@pytest.mark.parametrize(
    ("uuid", "key"),
    [
        ("GPU-5c5f4b2e-1111-2222-3333-444455556666", "5c5f4b2e-1111-2222-3333-444455556666"),
        ("5C5F4B2E-1111-2222-3333-444455556666", "5c5f4b2e-1111-2222-3333-444455556666"),
        ("MIG-0a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff", "0a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff"),
        (None, ""),
    ],
)
def test_torch_and_nvml_uuids_compare_equal(uuid: str | None, key: str) -> None:
    assert nvml_module.uuid_key(uuid) == key


LOST_GPU = [
    FakeGpu("GPU-00000000-0000-0000-0000-000000000000", name="NVIDIA A100-SXM4-80GB"),
    FakeGpu("GPU-11111111-1111-1111-1111-111111111111", handle_error=NVML_ERROR_GPU_IS_LOST),
    FakeGpu("GPU-22222222-2222-2222-2222-222222222222", uuid_error=NVML_ERROR_NO_PERMISSION),
    FakeGpu("GPU-33333333-3333-3333-3333-333333333333"),
]


def test_one_bad_gpu_is_recorded_and_the_others_kept() -> None:
    """A lost GPU and one this user may not read: NVML stays available, each failure is listed with its error."""
    nvml = nvml_module.collect_nvml(FakeNvml(LOST_GPU))
    assert nvml["available"] is True and nvml["device_count"] == 4
    assert [device["index"] for device in nvml["devices"]] == [0, 3]
    assert nvml["devices"][0]["name"] == "NVIDIA A100-SXM4-80GB"
    assert nvml["devices"][0]["memory_total_bytes"] == 80 * 2**30
    assert [(f["index"], f["code"]) for f in nvml["failed_devices"]] == [
        (1, NVML_ERROR_GPU_IS_LOST),
        (2, NVML_ERROR_NO_PERMISSION),
    ]
    assert "GPU is lost" in nvml["failed_devices"][0]["error"]
    assert "Insufficient Permissions" in nvml["failed_devices"][1]["error"]
    assert nvml["cuda_device_uuids"] == [
        "00000000-0000-0000-0000-000000000000",
        "33333333-3333-3333-3333-333333333333",
    ]


def test_nvml_handles_skip_a_gpu_nvml_cannot_open() -> None:
    """bench.measure.memory matches torch devices through these handles: a lost GPU must not hide the others."""
    fake = FakeNvml([LOST_GPU[0], LOST_GPU[1], LOST_GPU[3]])
    uuids = [fake.nvmlDeviceGetUUID(handle) for handle in nvml_module.nvml_handles(fake)]
    assert uuids == [LOST_GPU[0].uuid, LOST_GPU[3].uuid]


MIG_UUIDS = [f"MIG-{index}aaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee" for index in range(7)]


def test_mig_instances_are_what_cuda_can_use() -> None:
    """A MIG-mode GPU is listed by its instances (an empty slot skipped), a whole GPU by itself."""
    gpus = [
        FakeGpu(
            "GPU-aaaaaaaa-0000-0000-0000-000000000000", mig=[*MIG_UUIDS[:3], None, *MIG_UUIDS[3:]], max_mig=8
        ),
        FakeGpu("GPU-bbbbbbbb-0000-0000-0000-000000000000"),
    ]
    nvml = nvml_module.collect_nvml(FakeNvml(gpus))
    assert nvml["devices"][0]["mig_enabled"] is True and nvml["devices"][1]["mig_enabled"] is False
    assert nvml["devices"][0]["mig_devices"] == MIG_UUIDS
    assert nvml["mig_device_uuids"] == [nvml_module.uuid_key(uuid) for uuid in MIG_UUIDS]
    assert nvml["cuda_device_uuids"] == [*nvml["mig_device_uuids"], "bbbbbbbb-0000-0000-0000-000000000000"]
    assert nvml["failed_devices"] == []
    assert len(nvml_module.nvml_handles(FakeNvml(gpus))) == 8


def test_a_mig_slot_that_fails_otherwise_than_empty_is_recorded() -> None:
    gpu = FakeGpu("GPU-aaaaaaaa-0000-0000-0000-000000000000", mig=MIG_UUIDS[:2])
    gpu.mig_slot_errors = {1: NVML_ERROR_GPU_IS_LOST}
    nvml = nvml_module.collect_nvml(FakeNvml([gpu]))
    assert nvml["devices"][0]["mig_devices"] == MIG_UUIDS[:1]
    assert [(f["index"], f["mig_index"], f["code"]) for f in nvml["failed_devices"]] == [
        (0, 1, NVML_ERROR_GPU_IS_LOST)
    ]


def test_nvml_without_a_driver_is_a_reason() -> None:
    nvml = nvml_module.collect_nvml(FakeNvml([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND))
    assert nvml["available"] is False and "no NVIDIA driver" in nvml["reason"]
    driver = nvml_module.collect_nvml(FakeNvml([], driver="570.133.20", cuda_version=12080))
    assert driver["driver_version"] == "570.133.20" and driver["driver_cuda_version"] == "12.8"


def test_requested_flavour_comes_from_nox_or_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env.requested_flavour({}) is None
    assert env.requested_flavour({"BENCH_IMAGE_FLAVOUR": " CU128\n"}) == {
        "flavour": "cu128",
        "source": "BENCH_IMAGE_FLAVOUR",
    }
    both = {"BENCH_IMAGE_FLAVOUR": "cpu", "BENCH_REQUESTED_TORCH_FLAVOUR": "cu130"}
    assert env.requested_flavour(both) == {"flavour": "cu130", "source": "BENCH_REQUESTED_TORCH_FLAVOUR"}
    # the torch facts of a run carry the request of the process's own environment
    for name in env.FLAVOUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert env.collect_torch()["requested_flavour"] is None
    monkeypatch.setenv("BENCH_IMAGE_FLAVOUR", "cu128")
    assert env.collect_torch()["requested_flavour"] == {"flavour": "cu128", "source": "BENCH_IMAGE_FLAVOUR"}


@pytest.mark.parametrize(
    ("cuda", "hip", "flavour"),
    [
        ("12.8", None, "cu128"),
        ("13.0", None, "cu130"),
        ("11.8", None, "cu118"),
        (None, None, "cpu"),
        (None, "6.3.42131-fa1d09cbd", "rocm6.3"),
    ],
)
def test_installed_flavour(cuda: str | None, hip: str | None, flavour: str) -> None:
    assert env.installed_flavour(cuda, hip) == flavour
    assert env.flavour_cuda(flavour) == cuda


def test_installed_flavour_of_this_torch() -> None:
    flavour = env.installed_flavour(torch.version.cuda, getattr(torch.version, "hip", None))
    # read back the other way, the flavour gives this torch's CUDA version (None: CPU or ROCm)
    assert env.flavour_cuda(flavour) == torch.version.cuda, flavour
    assert re.fullmatch(env.FLAVOUR_PATTERN, flavour), flavour
    label = torch.__version__.partition("+")[2]  # the wheel's own name for its build: 2.14.1+cu130
    if re.fullmatch(env.FLAVOUR_PATTERN, label):  # not a source build's +git1234
        assert flavour == label
