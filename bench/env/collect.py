"""Facts about this machine and its PyTorch install, collected once per run.

Each `collect_<area>()` returns one dict and never raises: what cannot be read becomes
`{"available": False, "reason": "..."}`. `check.py` turns the facts into verdicts; `run` stores them
with every result so a number always travels with the build, devices and flags that produced it.
Paths to /proc and /sys are parameters so the parsers can be tested on real files elsewhere.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.core.envvars import env_text, env_threads
from bench.core.errors import one_line
from bench.env.contention import collect_load
from bench.env.nvml import collect_nvml, unavailable

Facts = dict[str, Any]


def _guard(collect: Callable[[], Facts]) -> Facts:
    """Runs one probe; an unexpected exception becomes a reason, never a traceback."""
    try:
        return collect()
    except Exception as error:  # a probe must not take the whole check down
        return unavailable(f"{type(error).__name__}: {error}")


def collect_python() -> Facts:
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
    }


def collect_torch() -> Facts:
    import torch

    cudnn_version = None
    if torch.backends.cudnn.is_available():
        cudnn_version = torch.backends.cudnn.version()
    return {
        "version": torch.__version__,
        "git_version": getattr(torch.version, "git_version", None),
        "debug": bool(torch.version.debug),
        "cuda": torch.version.cuda,
        "hip": getattr(torch.version, "hip", None),
        "cudnn": cudnn_version,
        "arch_list": torch.cuda.get_arch_list() if torch.version.cuda else [],
        "build": f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only",
        "requested_flavour": requested_flavour(),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "flags": {
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "cudnn_enabled": bool(torch.backends.cudnn.enabled),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "mkldnn": bool(torch.backends.mkldnn.is_available()),
            "mkl": bool(torch.backends.mkl.is_available()),
            "openmp": bool(torch.backends.openmp.is_available()),
        },
    }


def collect_torchvision() -> Facts:
    """torchvision's version, or why it does not import (a torch/torchvision mismatch fails here)."""
    try:
        installed = metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        installed = None
    try:
        import torchvision
    except Exception as error:
        return {"available": False, "reason": one_line(error), "installed_version": installed}
    return {"available": True, "version": torchvision.__version__, "installed_version": installed}


def expected_torchvision(torch_version: str) -> str | None:
    """The torchvision minor series built for a torch 2.x release (2.N pairs with 0.(N+15))."""
    match = re.match(r"2\.(\d+)", torch_version)
    return f"0.{int(match.group(1)) + 15}" if match else None


FLAVOUR_VARIABLES = ("BENCH_REQUESTED_TORCH_FLAVOUR", "BENCH_IMAGE_FLAVOUR")  # set by Nox / the images
FLAVOUR_PATTERN = r"cpu|cu\d{3,}|rocm\d+(\.\d+)*"


def requested_flavour(environ: Mapping[str, str] = os.environ) -> Facts | None:
    """The torch build this environment asked for (`cpu`, `cu128`), as the Nox session or image says.

    pip falls back to PyPI's default build without an error, so only the request tells what was meant.
    """
    for name in FLAVOUR_VARIABLES:
        value = (env_text(name, environ) or "").lower()
        if value:
            return {"flavour": value, "source": name}
    return None


def installed_flavour(cuda: str | None, hip: str | None = None) -> str:
    """torch's build as a wheel-index flavour: CUDA "13.0" is cu130, ROCm "6.3.x" rocm6.3, neither cpu."""
    if cuda:
        major, minor = [*cuda.split("."), "0"][:2]
        return f"cu{major}{minor}"
    if hip:
        return "rocm" + ".".join(hip.split(".")[:2])
    return "cpu"


def flavour_cuda(flavour: str) -> str | None:
    """The CUDA version of a `cuXYZ` flavour (cu128 is "12.8", cu130 "13.0"); None for any other."""
    match = re.fullmatch(r"cu(\d+)(\d)", flavour)
    return f"{int(match.group(1))}.{match.group(2)}" if match else None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cgroup_cpu_quota(cgroup: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs this container may use per the cgroup quota (v2 `cpu.max`, or v1 cfs files); None if unlimited."""
    try:
        text = (cgroup / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        if text:
            return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def cgroup_memory_limit(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    for path in (cgroup / "memory.max", cgroup / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
        return None
    return None


def cpu_governor(sysfs: Path = Path("/sys/devices/system/cpu")) -> str | None:
    try:
        return (sysfs / "cpu0" / "cpufreq" / "scaling_governor").read_text().strip()
    except OSError:
        return None


def affinity_cores() -> int | None:
    """CPUs in this process's affinity mask (None where the platform does not say)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def usable_cpus() -> float:
    """CPUs this process may use: its affinity, capped by a container's CPU quota (which may be fractional)."""
    return min(x for x in (affinity_cores(), cgroup_cpu_quota(), os.cpu_count()) if x is not None)


def collect_cpu() -> Facts:
    import torch

    quota = cgroup_cpu_quota()
    frequency = psutil.cpu_freq() if hasattr(psutil, "cpu_freq") else None
    return {
        "model": cpu_model(),
        "architecture": platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "affinity_cores": affinity_cores(),
        "cgroup_cpu_quota": quota,
        "usable_cpus": usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": env_threads("OMP_NUM_THREADS"),
        "frequency_mhz": round(frequency.current) if frequency else None,
        "governor": cpu_governor(),
    }


def collect_memory() -> Facts:
    memory = psutil.virtual_memory()
    return {
        "total_bytes": memory.total,
        "available_bytes": memory.available,
        "cgroup_limit_bytes": cgroup_memory_limit(),
    }


def collect_container(root: Path = Path("/")) -> Facts:
    """Whether this runs in a container, and which image (the Dockerfile sets BENCH_IMAGE)."""
    markers = [name for name in (".dockerenv", "run/.containerenv") if (root / name).exists()]
    try:
        cgroup = (root / "proc/1/cgroup").read_text()
    except OSError:
        cgroup = ""
    runtime_hint = next(
        (word for word in ("docker", "kubepods", "containerd", "podman") if word in cgroup), None
    )
    return {
        "in_container": bool(markers or runtime_hint or env_text("BENCH_IMAGE")),
        "markers": markers,
        "image": env_text("BENCH_IMAGE"),
        "image_flavour": env_text("BENCH_IMAGE_FLAVOUR"),
        # what the image was built FROM (with its digest when pinned)
        "base_image": env_text("BENCH_BASE_IMAGE"),
    }


def arch_coverage(capability: tuple[int, int], arch_list: list[str]) -> tuple[bool, str]:
    """Whether kernels in the build's arch list run on a device of `capability`, and how.

    Native `sm_XY` cubins run on the same major version at the same or a higher minor; `compute_XY`
    PTX is compiled by the driver for any newer device (slow first start). Arch-specific variants
    (`sm_90a`) run only on exactly that device.
    """
    major, minor = capability
    native = f"sm_{major}{minor}"
    if native in arch_list or f"{native}a" in arch_list:
        return True, f"native kernels ({native})"
    binary, ptx = [], []
    for arch in arch_list:
        parsed = re.fullmatch(r"(sm|compute)_(\d+)(\d)", arch)
        if not parsed:
            continue
        kind, arch_major, arch_minor = parsed.group(1), int(parsed.group(2)), int(parsed.group(3))
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            binary.append(arch)
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            ptx.append(arch)
    if binary:
        return True, f"binary-compatible kernels ({binary[-1]})"
    if ptx:
        return True, f"PTX JIT-compiled from {ptx[-1]} (slow first start)"
    shown = " ".join(arch_list) or "empty"
    return False, f"{native} is not covered by the build's arch list ({shown})"


def collect_cuda() -> Facts:
    """What torch sees of CUDA: the build, whether it initialises, and every visible device."""
    import torch

    if torch.version.cuda is None:
        return unavailable(f"this torch ({torch.__version__}) is a CPU-only build") | {"built_with": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    init_warnings = [" ".join(str(w.message).split()) for w in caught]
    facts: Facts = {"built_with": torch.version.cuda, "available": available, "device_count": count}
    if not available:
        reason = "torch is a CUDA build but no usable GPU was found"
        if init_warnings:
            reason += f": {init_warnings[0]}"
        elif env_text("CUDA_VISIBLE_DEVICES") is not None:
            reason += f" (CUDA_VISIBLE_DEVICES={env_text('CUDA_VISIBLE_DEVICES')!r})"
        else:
            reason += " (no NVIDIA driver or device on this machine)"
        return facts | {"reason": reason}
    arch_list = torch.cuda.get_arch_list()
    devices = []
    for index in range(count):
        props = torch.cuda.get_device_properties(index)
        capability = (props.major, props.minor)
        covered, how = arch_coverage(capability, arch_list)
        devices.append(
            {
                "index": index,
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "total_memory_bytes": props.total_memory,
                "multiprocessors": props.multi_processor_count,
                "uuid": str(getattr(props, "uuid", "")) or None,
                "arch_covered": covered,
                "arch_detail": how,
            }
        )
    facts["devices"] = devices
    facts["visible_devices_env"] = env_text("CUDA_VISIBLE_DEVICES")
    return facts


def collect_packages() -> dict[str, str | None]:
    names = (
        "torch",
        "torchvision",
        "pytest-benchmark",
        "psutil",
        "nvidia-ml-py",
        "tabulate",
        "numpy",
        "pillow",
    )
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


COLLECTORS: dict[str, Callable[[], Facts]] = {
    "python": collect_python,
    "torch": collect_torch,
    "torchvision": collect_torchvision,
    "packages": collect_packages,
    "cpu": collect_cpu,
    "memory": collect_memory,
    "cuda": collect_cuda,
    "nvml": collect_nvml,
    "container": collect_container,
    "load": collect_load,
}


def collect_all() -> Facts:
    """Every probe, each guarded; plus host name and time, so a results file says where and when."""
    facts: Facts = {"host": platform.node(), "collected": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for name, collect in COLLECTORS.items():
        facts[name] = _guard(collect)
    return facts
