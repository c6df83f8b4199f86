"""Facts about this machine and its PyTorch install, collected once per run.

Each `collect_<area>()` returns one dict and never raises: what cannot be read becomes
`{"available": False, "reason": "..."}`. `check.py` turns the facts into verdicts; `run` stores them
with every result so a number always travels with the build, devices and flags that produced it.
Paths to /proc and /sys are parameters so the parsers can be tested on real files elsewhere.
"""

from __future__ import annotations

import importlib
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

from bench.errors import one_line

Facts = dict[str, Any]

THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def unavailable(reason: str) -> Facts:
    return {"available": False, "reason": reason}


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
        value = environ.get(name, "").strip().lower()
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
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
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


def collect_load(sample_s: float = 0.2, busy_percent: float = 20.0) -> Facts:
    """What could disturb timings: load average, and other processes busy right now."""
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        load = None
    me = os.getpid()
    processes = []
    for process in psutil.process_iter(["pid", "name"]):
        try:
            process.cpu_percent(None)
            processes.append(process)
        except psutil.Error:
            continue
    time.sleep(sample_s)
    busy = []
    for process in processes:
        try:
            percent = process.cpu_percent(None)
        except psutil.Error:
            continue
        if process.pid != me and percent >= busy_percent:
            busy.append({"pid": process.pid, "name": process.info["name"], "cpu_percent": round(percent)})
    busy.sort(key=lambda entry: -entry["cpu_percent"])
    return {"loadavg": load, "busy_processes": busy[:10], "cpu_percent": psutil.cpu_percent(None)}


def cpu_time_split() -> dict[str, float]:
    """Machine-wide CPU seconds so far by kind; two readings give what happened in between."""
    times = psutil.cpu_times()
    return {"total": sum(times), "steal": getattr(times, "steal", 0.0), "idle": times.idle}


def disturbance_between(before: dict[str, float], after: dict[str, float]) -> Facts:
    """Share of CPU time the hypervisor took (steal) between two readings, plus load now."""
    total = after["total"] - before["total"]
    steal = after["steal"] - before["steal"]
    return {
        "steal_percent": round(100 * steal / total, 2) if total > 0 else None,
        "loadavg_end": [round(value, 2) for value in os.getloadavg()],
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
        "in_container": bool(markers or runtime_hint or os.environ.get("BENCH_IMAGE")),
        "markers": markers,
        "image": os.environ.get("BENCH_IMAGE"),
        "image_flavour": os.environ.get("BENCH_IMAGE_FLAVOUR"),
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
        elif os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
            reason += f" (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r})"
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
    facts["visible_devices_env"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return facts


def uuid_key(uuid: object) -> str:
    """A device UUID as torch and NVML both can spell it: without `GPU-`/`MIG-`, lower case."""
    text = str(uuid or "").strip().lower()
    for prefix in ("gpu-", "mig-"):
        text = text.removeprefix(prefix)
    return text


def mig_enabled(pynvml: Any, handle: Any) -> bool:
    """Whether a GPU is in MIG mode now: CUDA then sees its instances, never the GPU itself."""
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except (pynvml.NVMLError, AttributeError):  # no MIG on this GPU or in this nvidia-ml-py
        return False
    return bool(current == getattr(pynvml, "NVML_DEVICE_MIG_ENABLE", 1))


def mig_handles(pynvml: Any, handle: Any) -> tuple[list[tuple[int, Any]], list[Facts]]:
    """A MIG-mode GPU's instances as (slot, handle), and the slots NVML failed to open (with the error).

    An empty slot answers NVML_ERROR_NOT_FOUND and is skipped; any other error is a fault to report.
    """
    found, failed = [], []
    for mig_index in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            found.append((mig_index, pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, mig_index)))
        except pynvml.NVMLError as error:
            if getattr(error, "value", None) != getattr(pynvml, "NVML_ERROR_NOT_FOUND", 6):
                failed.append({"mig_index": mig_index, **nvml_error(error)})
    return found, failed


def nvml_handles(pynvml: Any) -> list[Any]:
    """The NVML handles of what CUDA can use: whole GPUs, and in place of a MIG-mode GPU its instances.

    A GPU NVML cannot open (lost, no permission) is left out, so the others can still be matched.
    """
    handles = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            if not mig_enabled(pynvml, handle):
                handles.append(handle)
                continue
            handles += [mig for _slot, mig in mig_handles(pynvml, handle)[0]]
        except pynvml.NVMLError:
            continue
    return handles


def nvml_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_error(error: Exception) -> Facts:
    """An NVML error as facts: its text, and its return code, which tells a lost GPU from a denied one."""
    return {"error": f"{type(error).__name__}: {error}", "code": getattr(error, "value", None)}


def collect_nvml(pynvml: Any = None) -> Facts:
    """The driver's view through NVML (nvidia-ml-py): driver version, every GPU, and the GPUs it cannot read.

    `pynvml` is the module to ask, nvidia-ml-py's by default (tests pass a fake one). One bad GPU is
    recorded in `failed_devices` with its error; it must not turn the whole of NVML into "unavailable".
    """
    if pynvml is None:
        try:
            pynvml = importlib.import_module("pynvml")
        except ImportError:
            return unavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        text = str(error)
        if "Library Not Found" in text or "not found" in text.lower():
            return unavailable(
                f"no NVIDIA driver: the NVML library (libnvidia-ml.so.1) was not found ({text})"
            )
        if "Driver Not Loaded" in text:
            return unavailable(f"the NVIDIA kernel driver is not loaded ({text})")
        return unavailable(f"NVML failed to start: {text}")
    facts: Facts = {"available": True, "driver_version": nvml_text(pynvml.nvmlSystemGetDriverVersion())}
    try:
        version = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        facts["driver_cuda_version"] = f"{version // 1000}.{version % 1000 // 10}"
    except (pynvml.NVMLError, AttributeError):
        facts["driver_cuda_version"] = None
    count = pynvml.nvmlDeviceGetCount()
    devices, failed = [], []
    for index in range(count):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid = nvml_text(pynvml.nvmlDeviceGetUUID(handle))
        except pynvml.NVMLError as error:  # a lost or inaccessible GPU: report it, keep the others
            failed.append({"index": index, "mig": False, "mig_index": None, **nvml_error(error)})
            continue
        device = _nvml_device(pynvml, index, handle, uuid)
        instances, mig_failed = _nvml_mig(pynvml, handle)
        device["mig_enabled"] = instances is not None
        device["mig_devices"] = instances or []
        failed += [{"index": index, "mig": True, **entry} for entry in mig_failed]
        devices.append(device)
    facts["device_count"] = count
    facts["devices"] = devices
    facts["failed_devices"] = failed
    facts["mig_device_uuids"] = [uuid_key(uuid) for d in devices for uuid in d["mig_devices"]]
    # what CUDA can use: a MIG-mode GPU shows up as its instances, not as itself
    facts["cuda_device_uuids"] = [
        uuid_key(uuid) for d in devices for uuid in (d["mig_devices"] if d["mig_enabled"] else [d["uuid"]])
    ]
    return facts


def _nvml_mig(pynvml: Any, handle: Any) -> tuple[list[str] | None, list[Facts]]:
    """A GPU's MIG instance UUIDs (None when MIG is off), and the instances NVML failed to read."""
    if not mig_enabled(pynvml, handle):
        return None, []
    try:
        handles, failed = mig_handles(pynvml, handle)
    except pynvml.NVMLError as error:
        return [], [{"mig_index": None, **nvml_error(error)}]
    uuids = []
    for mig_index, mig_handle in handles:
        try:
            uuids.append(nvml_text(pynvml.nvmlDeviceGetUUID(mig_handle)))
        except pynvml.NVMLError as error:
            failed.append({"mig_index": mig_index, **nvml_error(error)})
    return uuids, failed


def _nvml_device(pynvml: Any, index: int, handle: Any, uuid: str) -> Facts:
    def read(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (pynvml.NVMLError, AttributeError):
            return None

    memory = read(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
    reasons_call = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
    )
    mask = read(lambda: reasons_call(handle)) if reasons_call else None
    power = read(lambda: pynvml.nvmlDeviceGetPowerUsage(handle))
    return {
        "index": index,
        "name": read(lambda: nvml_text(pynvml.nvmlDeviceGetName(handle))),
        "uuid": uuid,
        "memory_total_bytes": memory.total if memory else None,
        "memory_used_bytes": memory.used if memory else None,
        "sm_clock_mhz": read(lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
        "sm_clock_max_mhz": read(lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)),
        "memory_clock_mhz": read(lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)),
        "temperature_c": read(lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
        "power_w": power / 1000 if power is not None else None,
        "utilization_percent": read(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        "throttle_reasons": decode_throttle_reasons(mask),
        "compute_processes": read(lambda: len(pynvml.nvmlDeviceGetComputeRunningProcesses(handle))),
    }


def decode_throttle_reasons(mask: int | None) -> list[str] | None:
    """NVML's clock-event bit mask as names; idle is normal and kept, so an empty list means none."""
    if mask is None:
        return None
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


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
