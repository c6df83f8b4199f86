"""The install check: facts from env.py plus computations that really run, each line with a verdict.

Verdicts: PASS and FAIL decide the exit status; WARN is worth reading but does not fail; INFO is a
fact; SKIP is a check that does not apply here (e.g. CUDA on a CPU-only machine, unless
`--require cuda`). Every FAIL and WARN carries a one-line hint of what to do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from bench import env as envmod
from bench.errors import one_line

PASS, FAIL, WARN, INFO, SKIP = "PASS", "FAIL", "WARN", "INFO", "SKIP"
MATMUL_SIZE = 512
FP32_BOUND = 1e-5  # relative Frobenius error of a 512x512 float32 matmul against float64: ~1e-7 typical
TF32_BOUND = 5e-3  # with TF32 or reduced-precision matmul allowed: ~5e-4 typical
# The oldest Linux driver each CUDA release's toolkit documents (CUDA Toolkit release notes, "CUDA Toolkit
# and Corresponding Driver Versions", GA releases, Linux x86_64).
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


@dataclass(frozen=True)
class CheckLine:
    name: str
    verdict: str
    detail: str
    hint: str = ""


@dataclass
class CheckReport:
    lines: list[CheckLine]
    env: dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(line.verdict != FAIL for line in self.lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": "pass" if self.passed else "fail",
            "lines": [asdict(line) for line in self.lines],
            "env": self.env,
        }


def run_check(require: tuple[str, ...] = (), env: dict[str, Any] | None = None) -> CheckReport:
    """Collects the facts (unless given) and runs every functional check on every visible device."""
    facts = env if env is not None else envmod.collect_all()
    lines: list[CheckLine] = []
    lines += _python_lines(facts)
    lines += _torch_lines(facts)
    lines += _flavour_lines(facts)
    lines += _torchvision_lines(facts)
    lines += _cpu_lines(facts)
    cuda_lines, cuda_devices = _cuda_lines(facts, require_cuda="cuda" in require)
    lines += cuda_lines
    for device in ["cpu", *cuda_devices]:
        lines.append(_functional(f"matmul {device}", partial(matmul_check, device)))
        lines.append(_functional(f"autograd {device}", partial(autograd_check, device)))
        lines.append(_torchvision_ops_line(facts, device))
        lines.append(_peak_line(device))
    return CheckReport(lines, facts)


def _peak_line(device: str) -> CheckLine:
    """The device's own measured limits (an INFO line; a measurement that fails is a WARN)."""
    try:
        return CheckLine(f"peak {device}", INFO, peak_text(device))
    except Exception as error:
        return CheckLine(
            f"peak {device}", WARN, one_line(error, 300), "the benchmark's efficiency figures will be missing"
        )


def peak_text(device: str) -> str:
    """`float32 110 GFLOP/s (1024² matmul), ...; per-op floor 1.1 µs`: measured now, in about a second."""
    from bench.efficiency import measure_peaks

    names = ("float32", "tfloat32") if device.startswith("cuda") else ("float32",)
    peaks = measure_peaks(device, names)
    parts = [
        f"{name} {peaks[name] / 1e9:,.0f} GFLOP/s ({peaks[f'{name}_matmul_side']}² matmul)" for name in names
    ]
    return f"{', '.join(parts)}; per-op floor {peaks['op_floor_s'] * 1e6:.2g} µs"


def _python_lines(facts: dict[str, Any]) -> list[CheckLine]:
    python = facts["python"]
    return [CheckLine("python", PASS, f"{python.get('version')} ({python.get('executable')})")]


def _torch_lines(facts: dict[str, Any]) -> list[CheckLine]:
    torch_facts = facts["torch"]
    if torch_facts.get("available") is False:
        return [CheckLine("torch", FAIL, f"not available: {torch_facts['reason']}", "pip install torch")]
    cudnn = torch_facts.get("cudnn")
    cudnn_text = f", cuDNN {cudnn_version_text(cudnn)}" if cudnn else ""
    detail = f"{torch_facts['version']}, {torch_facts['build']}{cudnn_text}"
    lines = [CheckLine("torch", PASS, detail)]
    if torch_facts.get("arch_list"):
        lines.append(CheckLine("torch arch list", INFO, " ".join(torch_facts["arch_list"])))
    flags = torch_facts["flags"]
    lines.append(
        CheckLine(
            "precision flags",
            INFO,
            f"float32 matmul precision {flags['float32_matmul_precision']}, TF32 matmul "
            f"{'on' if flags['cuda_matmul_allow_tf32'] else 'off'}, TF32 cuDNN "
            f"{'on' if flags['cudnn_allow_tf32'] else 'off'}, cuDNN benchmark "
            f"{'on' if flags['cudnn_benchmark'] else 'off'}, deterministic "
            f"{'on' if flags['cudnn_deterministic'] else 'off'}",
        )
    )
    return lines


def cudnn_version_text(version: int) -> str:
    """torch reports cuDNN 9.1.0 as 90100 but cuDNN 8.9.2 as 8902."""
    if version >= 90000:
        return f"{version // 10000}.{version // 100 % 100}.{version % 100}"
    return f"{version // 1000}.{version // 100 % 10}.{version % 100}"


def _torchvision_lines(facts: dict[str, Any]) -> list[CheckLine]:
    vision = facts["torchvision"]
    torch_version = facts["torch"].get("version", "")
    expected = envmod.expected_torchvision(torch_version)
    pair_hint = (
        f"install the torchvision built for torch {torch_version}: pip install 'torchvision=={expected}.*' "
        "from the same index as torch (or reinstall both together)"
        if expected
        else "install the torchvision release built for this torch, from the same index"
    )
    if not vision.get("available"):
        installed = vision.get("installed_version")
        detail = f"does not import: {vision['reason']}"
        if not installed:
            return [CheckLine("torchvision", FAIL, detail, "pip install torchvision")]
        detail += f" (installed: torchvision {installed}, torch {torch_version})"
        hint = pair_hint
        if expected and installed.startswith(expected + "."):
            hint = build_mismatch_hint(torch_version, installed)
        return [CheckLine("torchvision", FAIL, detail, hint)]
    version = vision["version"]
    if expected and not version.startswith(expected + "."):
        return [
            CheckLine(
                "torchvision",
                WARN,
                f"{version} imports, but torch {torch_version} is released with torchvision {expected}.x; "
                "the ops check below tells whether this pair works",
                f"if anything torchvision does fails: {pair_hint}",
            )
        ]
    torch_build, vision_build = torch_version.partition("+")[2], version.partition("+")[2]
    if torch_build and vision_build and torch_build != vision_build:
        return [
            CheckLine(
                "torchvision",
                WARN,
                f"{version} is built for {vision_build} but torch {torch_version} for {torch_build}; its "
                "compiled ops may fail on a GPU",
                build_mismatch_hint(torch_version, version),
            )
        ]
    return [CheckLine("torchvision", PASS, f"{version} (pairs with torch {torch_version})")]


def build_mismatch_hint(torch_version: str, vision_version: str) -> str:
    """The right release of torchvision, but built for another flavour of torch (CPU vs CUDA)."""
    torch_build = torch_version.partition("+")[2] or "PyPI's default"
    vision_build = vision_version.partition("+")[2] or "PyPI's default"
    if torch_build == vision_build:
        return "release and build match, yet it fails: reinstall both (pip install --force-reinstall torch torchvision)"
    hint = (
        f"torchvision {vision_version} is the right release but another build ({vision_build}) than torch "
        f"{torch_version} ({torch_build}): reinstall both from one index"
    )
    if torch_build != "PyPI's default":
        hint += (
            f", e.g. pip install torch torchvision --index-url https://download.pytorch.org/whl/{torch_build}"
        )
    return hint


def _cpu_lines(facts: dict[str, Any]) -> list[CheckLine]:
    cpu, memory = facts["cpu"], facts["memory"]
    lines = []
    if cpu.get("available") is False:
        lines.append(
            CheckLine("cpu", WARN, f"not available: {cpu['reason']}", "nothing to do unless numbers look odd")
        )
    else:
        quota = cpu.get("cgroup_cpu_quota")
        quota_text = f", container CPU quota {quota:g}" if quota else ", no CPU quota"
        lines.append(
            CheckLine(
                "cpu",
                INFO,
                f"{cpu['model']}: {cpu['physical_cores']} physical / {cpu['logical_cores']} logical cores, "
                f"{cpu['affinity_cores']} in this process's affinity{quota_text}",
            )
        )
        threads, usable = cpu["torch_threads"], cpu["usable_cpus"]
        if usable and threads > max(1, round(usable)):
            lines.append(
                CheckLine(
                    "threads",
                    WARN,
                    f"torch will use {threads} threads but only {usable:g} CPUs are usable here",
                    f"set OMP_NUM_THREADS={max(1, int(usable))} (or torch.set_num_threads) to avoid oversubscription",
                )
            )
        else:
            lines.append(
                CheckLine("threads", PASS, f"torch uses {threads} threads for {usable:g} usable CPUs")
            )
    if memory.get("available") is not False:
        limit = memory.get("cgroup_limit_bytes")
        limit_text = f", container limit {limit / 2**30:.1f} GiB" if limit else ""
        lines.append(
            CheckLine(
                "memory",
                INFO,
                f"{memory['total_bytes'] / 2**30:.1f} GiB total, {memory['available_bytes'] / 2**30:.1f} GiB "
                f"available{limit_text}",
            )
        )
    return lines


def _cuda_lines(facts: dict[str, Any], require_cuda: bool) -> tuple[list[CheckLine], list[str]]:
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
    nvml_devices = {envmod.uuid_key(d.get("uuid")): d for d in nvml.get("devices", [])}
    devices = []
    for device in cuda["devices"]:
        name = f"cuda:{device['index']}"
        devices.append(name)
        nvml_device = nvml_devices.get(envmod.uuid_key(device.get("uuid")), {})
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
    torch_keys = {f"cuda:{d['index']}": envmod.uuid_key(d.get("uuid")) for d in cuda["devices"]}
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
        key = envmod.uuid_key(entry)
        matches = [candidate for candidate in (*whole, *mig) if key and candidate.startswith(key)]
        if len(matches) != 1:
            break
        (one_of if matches[0] in mig else must_see).append(matches[0])
    return must_see, one_of


def _nvml_labels(nvml: dict[str, Any]) -> dict[str, str]:
    """How to name an NVML device in a verdict: its index and name, and for a MIG instance its UUID."""
    labels = {}
    for device in nvml.get("devices", []):
        labels[envmod.uuid_key(device["uuid"])] = f"GPU {device['index']} ({device.get('name')})"
        for uuid in device.get("mig_devices", []):
            labels[envmod.uuid_key(uuid)] = f"GPU {device['index']} MIG instance {uuid}"
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


def _flavour_lines(facts: dict[str, Any]) -> list[CheckLine]:
    """The build asked for (Nox, the images) against the one installed: PyPI's fallback is another build."""
    torch_facts, nvml = facts["torch"], facts.get("nvml", {})
    requested = torch_facts.get("requested_flavour")
    if not requested or torch_facts.get("available") is False:
        return []
    asked, source = requested["flavour"], requested["source"]
    installed = envmod.installed_flavour(torch_facts.get("cuda"), torch_facts.get("hip"))
    version = torch_facts.get("version", "?")
    if asked == installed:
        return [CheckLine("torch flavour", PASS, f"{installed} as asked ({source}={asked}), torch {version}")]
    if not re.fullmatch(envmod.FLAVOUR_PATTERN, asked):
        return [
            CheckLine(
                "torch flavour",
                INFO,
                f"{source}={asked!r} is no flavour this check knows (cpu, cuXYZ, rocmX.Y); torch {version} "
                f"is {installed}",
            )
        ]
    hint = f"asked for {asked}, installed {installed}"
    built = torch_facts.get("cuda")
    if built and CUDA_DRIVER_MINIMUM.get(built):
        here = f"; this machine's is {nvml['driver_version']}" if nvml.get("available") else ""
        hint += f" (CUDA {built} builds need driver {CUDA_DRIVER_MINIMUM[built]} or later on Linux{here})"
    hint += (
        f"; to get the requested build: pip install --force-reinstall torch torchvision --index-url "
        f"https://download.pytorch.org/whl/{asked}"
    )
    if source == "BENCH_REQUESTED_TORCH_FLAVOUR":
        hint += " (and check that BENCH_TORCH_INDEX_BASE is set and reachable)"
    return [
        CheckLine(
            "torch flavour",
            WARN,
            f"asked for {asked} ({source}) but torch {version} is a {_flavour_text(installed)} build",
            hint,
        )
    ]


def _flavour_text(flavour: str) -> str:
    cuda = envmod.flavour_cuda(flavour)
    return f"CUDA {cuda}" if cuda else ("CPU-only" if flavour == "cpu" else flavour)


def _functional(name: str, probe: Callable[[], str]) -> CheckLine:
    """Runs one real computation; any exception is a FAIL with its message and a hint."""
    try:
        return CheckLine(name, PASS, probe())
    except CheckFailure as failure:
        return CheckLine(name, FAIL, failure.detail, failure.hint)
    except Exception as error:
        return CheckLine(
            name,
            FAIL,
            one_line(error, 300),
            "the device or the install is broken: rerun with --json for facts",
        )


class CheckFailure(Exception):
    def __init__(self, detail: str, hint: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint


def matmul_check(device: str) -> str:
    """A float32 matmul on `device` against a float64 reference on the CPU, within a stated bound."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.rand(MATMUL_SIZE, MATMUL_SIZE, generator=generator, dtype=torch.float64) * 2 - 1
    b = torch.rand(MATMUL_SIZE, MATMUL_SIZE, generator=generator, dtype=torch.float64) * 2 - 1
    reference = a @ b
    result = (a.float().to(device) @ b.float().to(device)).cpu().double()
    error = float((result - reference).norm() / reference.norm())
    reduced = device.startswith("cuda") and (
        torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    )
    bound = TF32_BOUND if reduced else FP32_BOUND
    mode = "TF32 allowed" if reduced else "full float32"
    detail = f"{MATMUL_SIZE}x{MATMUL_SIZE} float32 vs float64: relative error {error:.1e} (bound {bound:.0e}, {mode})"
    if not error <= bound:  # also catches NaN
        raise CheckFailure(
            detail, "wrong results from this device's BLAS: check the driver and the torch build"
        )
    return detail


def autograd_check(device: str) -> str:
    """One forward/backward of the chapter's MLP: gradients match a float64 CPU reference, SGD lowers the loss."""
    import torch

    from bench.model import build_training

    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(64, 784, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    reference = build_training("cpu", seed=3)
    reference.net.double()
    loss_ref = reference.criterion(reference.net(inputs.double()), labels)
    loss_ref.backward()
    training = build_training(device, seed=3)
    x, y = inputs.to(device), labels.to(device)
    loss = training.criterion(training.net(x), y)
    loss.backward()
    worst = 0.0
    for (name, param), param_ref in zip(
        training.net.named_parameters(), reference.net.parameters(), strict=True
    ):
        if param.grad is None or param_ref.grad is None:
            raise CheckFailure(f"no gradient reached {name}", "autograd is broken in this install")
        grad, grad_ref = param.grad.detach().cpu().double(), param_ref.grad
        if not torch.isfinite(grad).all():
            raise CheckFailure(f"gradient of {name} is not finite", "the device computes wrong results")
        worst = max(worst, float((grad - grad_ref).norm() / grad_ref.norm().clamp_min(1e-12)))
    bound = TF32_BOUND if device.startswith("cuda") else 1e-4
    if not worst <= bound:
        raise CheckFailure(
            f"gradients differ from the float64 reference by {worst:.1e} (bound {bound:.0e})",
            "wrong results from autograd on this device: check the driver and the torch build",
        )
    first = float(loss.detach())
    for _ in range(5):
        training.step(x, y)
    with torch.no_grad():
        last = float(training.criterion(training.net(x), y))
    if not last < first:
        raise CheckFailure(
            f"5 SGD steps did not lower the loss ({first:.4f} -> {last:.4f})", "optimizer is broken"
        )
    return f"MLP gradients within {worst:.1e} of float64 (bound {bound:.0e}); 5 SGD steps: loss {first:.3f} -> {last:.3f}"


def nms_check(device: str) -> str:
    """torchvision's compiled `nms` on three boxes: catches a torch/torchvision mismatch."""
    import torch
    import torchvision

    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32, device=device
    )
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    keep = torchvision.ops.nms(boxes, scores, iou_threshold=0.5).cpu().tolist()
    if keep != [0, 2]:
        raise CheckFailure(
            f"nms kept {keep}, expected [0, 2]", "torchvision's compiled ops compute wrong results"
        )
    return "torchvision.ops.nms on 3 boxes kept [0, 2] as expected"


def _torchvision_ops_line(facts: dict[str, Any], device: str) -> CheckLine:
    name = f"torchvision ops {device}"
    if not facts["torchvision"].get("available"):
        return CheckLine(
            name, FAIL, "torchvision does not import (see above)", "fix the torchvision line first"
        )
    line = _functional(name, partial(nms_check, device))
    if line.verdict == FAIL and "does not exist" in line.detail:
        expected = envmod.expected_torchvision(facts["torch"].get("version", ""))
        return CheckLine(
            name,
            FAIL,
            line.detail,
            f"torch and torchvision are a mismatched pair: install torchvision {expected}.x from torch's index",
        )
    return line
