"""The install check: the collected facts plus computations that really run, each line with a verdict.

Verdicts: PASS and FAIL decide the exit status; WARN is worth reading but does not fail; INFO is a
fact; SKIP is a check that does not apply here (e.g. CUDA on a CPU-only machine, unless
`--require cuda`). Every FAIL and WARN carries a one-line hint of what to do.

The computations on each device (a matmul, autograd through the chapter's model, torchvision's
compiled ops, the measured peak) are passed in (`Probes`; `bench.measure.probes` has the real ones),
as torch.utils.collect_env passes its command runner in: the verdicts are tested with canned ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from bench.core.errors import CheckFailure, one_line
from bench.core.records import CONTENDED_WAIT_SHARE
from bench.core.results import CheckLine
from bench.env import collect as envmod
from bench.env.check_cuda import CUDA_DRIVER_MINIMUM, cuda_lines
from bench.env.verdicts import FAIL, INFO, PASS, SKIP, WARN

__all__ = ["FAIL", "INFO", "PASS", "SKIP", "WARN", "CheckReport", "Probes", "run_check"]
DeviceProbe = Callable[[str], str]  # a device's name -> what it computed; raises CheckFailure if wrong


@dataclass(frozen=True)
class Probes:
    """The computations the check runs on every device."""

    matmul: DeviceProbe
    autograd: DeviceProbe
    torchvision_ops: DeviceProbe
    peak: DeviceProbe


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


def load_lines(facts: dict[str, Any]) -> list[CheckLine]:
    """Whether other work will share the CPUs with the benchmark: torch's threads plus the busy
    processes against the usable CPUs, and the run-queue wait of a short probe (which sees what
    process lists cannot, inside containers)."""
    cpu, load = facts.get("cpu", {}), facts.get("load", {})
    threads, usable = cpu.get("torch_threads"), cpu.get("usable_cpus")
    busy = load.get("busy_processes") if isinstance(load.get("busy_processes"), list) else []
    wait = load.get("probe_wait_share")
    if not isinstance(threads, int) or not isinstance(usable, (int, float)) or load.get("available") is False:
        return []
    busy_cpus = sum(p.get("cpu_percent", 0) for p in busy) / 100
    problems = []
    if threads + busy_cpus > usable + 0.5:
        names = ", ".join(f"{p.get('name')} ({p.get('cpu_percent')}%)" for p in busy[:3])
        problems.append(f"torch's {threads} threads plus {busy_cpus:.1f} CPUs of other work ({names}) exceed the "
                        f"{usable:g} usable CPUs")  # fmt: skip
    if isinstance(wait, (int, float)) and wait > CONTENDED_WAIT_SHARE:
        problems.append(f"a 0.2 s probe waited {wait:.0%} of its time for a CPU")
    if not problems:
        detail = "no other busy process" if not busy else f"{busy_cpus:.1f} CPUs of other work"
        wait_text = f", probe waited {wait:.0%} for a CPU" if isinstance(wait, (int, float)) else ""
        return [CheckLine("load", PASS, f"{detail}{wait_text}")]
    hint = f"stop the other job, or run with --threads {max(1, int(usable - busy_cpus))}; figures measured now will be marked contended"
    return [CheckLine("load", WARN, "; ".join(problems), hint)]


def run_check(
    probes: Probes, require: tuple[str, ...] = (), env: dict[str, Any] | None = None
) -> CheckReport:
    """Collects the facts (unless given) and runs every functional check on every visible device."""
    facts = env if env is not None else envmod.collect_all()
    lines: list[CheckLine] = []
    lines += _python_lines(facts)
    lines += _torch_lines(facts)
    lines += _flavour_lines(facts)
    lines += _torchvision_lines(facts)
    lines += _cpu_lines(facts)
    lines += load_lines(facts)
    gpu_lines, cuda_devices = cuda_lines(facts, require_cuda="cuda" in require)
    lines += gpu_lines
    for device in ["cpu", *cuda_devices]:
        lines.append(_functional(f"matmul {device}", partial(probes.matmul, device)))
        lines.append(_functional(f"autograd {device}", partial(probes.autograd, device)))
        lines.append(_torchvision_ops_line(facts, device, probes.torchvision_ops))
        lines.append(_peak_line(device, probes.peak))
    return CheckReport(lines, facts)


def _peak_line(device: str, peak: DeviceProbe) -> CheckLine:
    """The device's own measured limits (an INFO line; a measurement that fails is a WARN)."""
    try:
        return CheckLine(f"peak {device}", INFO, peak(device))
    except Exception as error:
        return CheckLine(
            f"peak {device}", WARN, one_line(error, 300), "the benchmark's efficiency figures will be missing"
        )


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


def _torchvision_ops_line(facts: dict[str, Any], device: str, probe: DeviceProbe) -> CheckLine:
    name = f"torchvision ops {device}"
    if not facts["torchvision"].get("available"):
        return CheckLine(
            name, FAIL, "torchvision does not import (see above)", "fix the torchvision line first"
        )
    line = _functional(name, partial(probe, device))
    if line.verdict == FAIL and "does not exist" in line.detail:
        expected = envmod.expected_torchvision(facts["torch"].get("version", ""))
        return CheckLine(
            name,
            FAIL,
            line.detail,
            f"torch and torchvision are a mismatched pair: install torchvision {expected}.x from torch's index",
        )
    return line
