"""The install check's GPU lines: the driver against the build, every device against the build's arch
list, torch's devices against NVML's (matched by UUID, MIG instances included), unreadable GPUs."""

from __future__ import annotations

import re
from typing import Any

from bench.core.results import CheckLine
from bench.env import collect as envmod
from bench.env import nvml as nvmlmod
from bench.env.gpu_health import preflight_problems
from bench.env.verdicts import FAIL, PASS, SKIP, WARN

CUDA_DRIVER_MINIMUM = {
    "11.8": "520.61.05",
    "12.1": "530.30.02",
    "12.4": "550.54.14",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}
NVML_ERROR_NO_PERMISSION = 4  # nvidia-ml-py's pynvml.NVML_ERROR_NO_PERMISSION
CUDA_WHEEL_HINT = (
    "install a CUDA build: pip install torch torchvision --extra-index-url https://download.pytorch.org/whl/cu128 "
    "(pick the cuXXX your driver supports)"
)


def cuda_lines(facts: dict[str, Any], require_cuda: bool) -> tuple[list[CheckLine], list[str]]:
    cuda, nvml = facts["cuda"], facts["nvml"]
    lines: list[CheckLine] = []
    if nvml.get("available"):
        failed = {entry["index"] for entry in nvml.get("failed_devices", [])}
        failed_text = f", {len(failed)} of them unreadable" if failed else ""
        lines.append(
            CheckLine(
                "nvidia driver",
                PASS,
                f"{nvml['driver_version']} (supports CUDA {nvml.get('driver_cuda_version') or '?'}), "
                f"{nvml['device_count']} GPU(s) via NVML{failed_text}",
            )
        )
    else:
        lines.append(CheckLine("nvidia driver", SKIP, f"not available: {nvml['reason']}"))
    lines += _nvml_fault_lines(cuda, nvml, require_cuda)
    lines += preflight_lines(nvml)
    lines += _driver_build_lines(cuda, nvml)
    if not cuda.get("available"):
        reason = cuda.get("reason", "unknown")
        if require_cuda:
            hint = CUDA_WHEEL_HINT if cuda.get("built_with") is None else _no_gpu_hint(nvml)
            lines.append(CheckLine("cuda", FAIL, f"no usable CUDA device: {reason}", hint))
        else:
            lines.append(CheckLine("cuda", SKIP, f"not available: {reason}"))
        return lines, []
    lines.append(
        CheckLine(
            "cuda",
            PASS,
            f"torch built with CUDA {cuda['built_with']}, {cuda['device_count']} device(s) usable",
        )
    )
    nvml_devices = {nvmlmod.uuid_key(d.get("uuid")): d for d in nvml.get("devices", [])}
    devices = []
    for device in cuda["devices"]:
        name = f"cuda:{device['index']}"
        devices.append(name)
        nvml_device = nvml_devices.get(nvmlmod.uuid_key(device.get("uuid")), {})
        driver = f", driver {nvml['driver_version']}" if nvml.get("available") else ""
        used = nvml_device.get("memory_used_bytes")
        used_text = f" ({used / 2**30:.1f} GiB in use)" if used is not None else ""
        detail = (
            f"{device['name']}, compute capability {device['capability']}, "
            f"{device['total_memory_bytes'] / 2**30:.1f} GiB{used_text}{driver}; {device['arch_detail']}"
        )
        if device["arch_covered"]:
            lines.append(CheckLine(f"gpu {name}", PASS, detail))
        else:
            lines.append(
                CheckLine(
                    f"gpu {name}",
                    FAIL,
                    detail,
                    f"this torch build has no kernels for compute capability {device['capability']}: install a "
                    "torch wheel built for a newer CUDA (a newer cuXXX index)",
                )
            )
    lines.append(_count_line(cuda, nvml))
    return lines, devices


def preflight_lines(nvml: dict[str, Any]) -> list[CheckLine]:
    """A WARN for each thing an administrator would fix before trusting a GPU's figures."""
    return [
        CheckLine(f"gpu {device.get('index')} health", WARN, problem, hint)
        for device in nvml.get("devices", [])
        for problem, hint in preflight_problems(device.get("preflight") or {})
    ]


def _no_gpu_hint(nvml: dict[str, Any]) -> str:
    if not nvml.get("available"):
        return "install the NVIDIA driver (in a container: the NVIDIA Container Toolkit and --gpus all)"
    return "check CUDA_VISIBLE_DEVICES and that the driver supports this torch's CUDA version (nvidia-smi)"


def _count_line(cuda: dict[str, Any], nvml: dict[str, Any]) -> CheckLine:
    torch_count = cuda["device_count"]
    if not nvml.get("available"):
        return CheckLine("device count", SKIP, f"torch sees {torch_count}; NVML not available to compare")
    if nvml.get("mig_device_uuids"):
        return _mig_line(cuda, nvml)
    nvml_count = len(nvml.get("cuda_device_uuids", [])) or nvml["device_count"]
    visible = cuda.get("visible_devices_env")
    if torch_count == nvml_count:
        return CheckLine("device count", PASS, f"torch and NVML both see {torch_count}")
    if visible is not None and torch_count < nvml_count:
        return CheckLine(
            "device count",
            PASS,
            f"torch sees {torch_count} of NVML's {nvml_count} (CUDA_VISIBLE_DEVICES={visible})",
        )
    return CheckLine(
        "device count",
        FAIL,
        f"torch sees {torch_count} CUDA device(s) but NVML sees {nvml_count}",
        "a GPU may be in a bad state or unsupported by this build: run nvidia-smi and check dmesg",
    )


def _mig_line(cuda: dict[str, Any], nvml: dict[str, Any]) -> CheckLine:
    """With MIG on, a CUDA process sees one MIG instance, not all: torch's devices are matched by UUID.

    PASS when every torch device is a GPU or MIG instance NVML lists, and every device that should be
    visible (per CUDA_VISIBLE_DEVICES, see `_expected_visible`) is among them.
    """
    mig = nvml["mig_device_uuids"]
    whole = [key for key in nvml["cuda_device_uuids"] if key not in mig]
    torch_keys = {f"cuda:{d['index']}": nvmlmod.uuid_key(d.get("uuid")) for d in cuda["devices"]}
    visible = cuda.get("visible_devices_env")
    where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
    if not all(torch_keys.values()):
        return CheckLine("device count", SKIP, "torch reports no device UUIDs to match NVML's MIG instances")
    unmatched = [name for name, key in torch_keys.items() if key not in mig and key not in whole]
    if unmatched:
        return CheckLine(
            "device count",
            FAIL,
            f"torch's {', '.join(unmatched)} {'matches' if len(unmatched) == 1 else 'match'} no GPU or MIG "
            f"instance NVML lists{where}",
            "compare the UUIDs of nvidia-smi -L with CUDA_VISIBLE_DEVICES; in a container, check which "
            "devices it was given",
        )
    seen = set(torch_keys.values())
    must_see, one_of = _expected_visible(visible, whole, mig)
    missing = [key for key in must_see if key not in seen]
    if one_of and not seen & set(one_of):
        missing.append(one_of[0])
    if missing:
        labels = _nvml_labels(nvml)
        return CheckLine(
            "device count",
            FAIL,
            f"torch does not see {', '.join(labels.get(key, key) for key in missing)}, which should be "
            f"visible{where}",
            "a GPU may be in a bad state or unsupported by this build: run nvidia-smi -L and check dmesg",
        )
    seen_mig = len(seen & set(mig))
    whole_text = f" and {len(seen) - seen_mig} of {len(whole)} whole GPU(s)" if whole else ""
    return CheckLine(
        "device count",
        PASS,
        f"torch sees {seen_mig} of {len(mig)} MIG instances{whole_text}, matched by UUID{where} "
        "(a CUDA process uses one MIG instance)",
    )


def _expected_visible(visible: str | None, whole: list[str], mig: list[str]) -> tuple[list[str], list[str]]:
    """What torch must see: whole GPUs that must all be there, and MIG instances of which one must be.

    Unset, CUDA shows every whole GPU. Set, CUDA reads its entries up to the first that names nothing,
    and UUIDs (or unique prefixes) name devices we can check; indices follow CUDA's own ordering, not
    NVML's, so they name nothing checkable here. Listed MIG instances: CUDA uses only one of them.
    """
    if visible is None:
        return list(whole), []
    must_see: list[str] = []
    one_of: list[str] = []
    for entry in visible.split(","):
        entry = entry.strip()
        if entry.isdigit():
            continue
        key = nvmlmod.uuid_key(entry)
        matches = [candidate for candidate in (*whole, *mig) if key and candidate.startswith(key)]
        if len(matches) != 1:
            break
        (one_of if matches[0] in mig else must_see).append(matches[0])
    return must_see, one_of


def _nvml_labels(nvml: dict[str, Any]) -> dict[str, str]:
    """How to name an NVML device in a verdict: its index and name, and for a MIG instance its UUID."""
    labels = {}
    for device in nvml.get("devices", []):
        labels[nvmlmod.uuid_key(device["uuid"])] = f"GPU {device['index']} ({device.get('name')})"
        for uuid in device.get("mig_devices", []):
            labels[nvmlmod.uuid_key(uuid)] = f"GPU {device['index']} MIG instance {uuid}"
    return labels


def _nvml_fault_lines(cuda: dict[str, Any], nvml: dict[str, Any], require_cuda: bool) -> list[CheckLine]:
    """GPUs NVML lists but cannot read: each a FAIL, else a lost GPU would pass the check unseen.

    Only a WARN where torch is a CPU-only build and CUDA is not required: nothing here uses the GPU.
    """
    uses_gpu = require_cuda or cuda.get("built_with") is not None
    lines = []
    for entry in nvml.get("failed_devices", []):
        where = f"GPU {entry['index']}"
        if entry.get("mig"):
            slot = entry.get("mig_index")
            where = f"{where} MIG slot {slot}" if slot is not None else f"the MIG instances of {where}"
        detail = f"NVML lists {where} but cannot read it: {entry['error']}"
        if not uses_gpu:
            detail += " (this CPU-only torch does not use it)"
        lines.append(
            CheckLine(f"nvml gpu {entry['index']}", FAIL if uses_gpu else WARN, detail, _fault_hint(entry))
        )
    return lines


def _fault_hint(entry: dict[str, Any]) -> str:
    index = entry["index"]
    if entry.get("code") == NVML_ERROR_NO_PERMISSION:
        return (
            f"this user may not query GPU {index}: check the permissions of /dev/nvidia* (in a container, "
            f"that the GPU was passed in), run nvidia-smi -i {index}, and check dmesg"
        )
    return (
        f"run nvidia-smi -i {index} and look for Xid errors in dmesg (sudo dmesg | grep -i xid); a lost GPU "
        f"needs a reset (sudo nvidia-smi -r -i {index}, with nothing running on it) or a reboot"
    )


def _driver_build_lines(cuda: dict[str, Any], nvml: dict[str, Any]) -> list[CheckLine]:
    """A driver older than torch's CUDA build: a FAIL where there is a GPU, a WARN where there is none.

    Within one CUDA major version a newer build runs on an older driver (minor version compatibility,
    without JIT of newer PTX), so that is a WARN when torch's CUDA did start here.
    """
    built, supported = cuda.get("built_with"), nvml.get("driver_cuda_version")
    if not built or not supported or not nvml.get("available"):
        return []
    if _version(supported) >= _version(built):
        return []
    driver = nvml["driver_version"]
    detail = f"driver {driver} supports CUDA up to {supported}, torch is built with CUDA {built}"
    minimum = CUDA_DRIVER_MINIMUM.get(built)
    hint = (
        f"upgrade the NVIDIA driver (CUDA {built} builds need {minimum} or later, the documented minimum on "
        f"Linux)"
        if minimum
        else "upgrade the NVIDIA driver"
    )
    hint += (
        f", or install a torch built for CUDA {supported} or older: pip install --force-reinstall torch "
        f"torchvision --index-url https://download.pytorch.org/whl/{envmod.installed_flavour(supported)} (or "
        "the newest cuXYZ below it that the index has)"
    )
    if not nvml.get("device_count"):
        return [CheckLine("driver vs build", WARN, detail + " (no GPU here to run it)", hint)]
    same_major = _version(supported)[0] == _version(built)[0]
    if same_major and cuda.get("available"):
        detail += "; it runs through CUDA minor version compatibility, without JIT of newer PTX"
        return [CheckLine("driver vs build", WARN, detail, hint)]
    return [CheckLine("driver vs build", FAIL, detail, hint)]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])
