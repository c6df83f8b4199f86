"""Why a setup is slow and what would help, from the cells of one run: the conclusions a reader would
otherwise draw by hand.

For each device (and model), a finding names a bottleneck (`data`, `per-op overhead`, `compute`,
`memory`, `communication`) with the figure that shows it, and every remedy the run measured, each
with its gain over the setup it would replace, read from two cells of the same run. A gain is
claimed only when the two cells' intervals (their interquartile ranges, per sample) do not overlap;
otherwise it is `within noise`. Cells whose figures are not to be trusted (contended, inconsistent,
above the peak, invalid) are never evidence, and the finding says it left them out. A remedy the
run did not measure comes with the `bench run` command that would, never with an estimate.
Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from bench.analysis.metrics import COMPUTE_BOUND, OVERHEAD_BOUND, case_figures
from bench.core.catalog import OVERHEAD_SHARE, Status
from bench.core.keys import CaseKey, variant
from bench.core.results import CaseResult, Run

DATA, OVERHEAD, COMPUTE, MEMORY, COMMUNICATION = (
    "data",
    "per-op overhead",
    "compute",
    "memory",
    "communication",
)
# what a step bound by launches can try, and what a step bound by arithmetic can (same batch, same device)
OVERHEAD_MODES = {"cpu": ("fused", "compile"), "cuda": ("fused", "cuda-graph", "compile")}
COMPUTE_MODES = {"cpu": ("bf16",), "cuda": ("bf16", "tf32")}


@dataclass(frozen=True)
class Remedy:
    """One thing that would help: measured (`gain` over the finding's case) or how to measure it."""

    what: str
    gain: float | None = None  # samples/s of the remedy's cell over the finding's cell
    claimed: bool = False  # the intervals of the two cells do not overlap
    case: CaseKey | None = None  # the remedy's cell
    left_out: str | None = None  # why its cell is not evidence (contended, invalid ...)
    flags: tuple[tuple[str, str], ...] | None = None  # not measured: the `bench run` flags that would

    @property
    def measured(self) -> bool:
        return self.flags is None


@dataclass(frozen=True)
class Finding:
    """A bottleneck of one setup, the figure that shows it, and the remedies for it."""

    bottleneck: str
    case: CaseKey
    figure: str
    remedies: list[Remedy] = field(default_factory=list)


def rate_interval(case: CaseResult) -> tuple[float, float] | None:
    """The case's samples/s at the two ends of its interquartile range of time per unit."""
    if not case.ok or not case.median_s or case.iqr_s is None or not case.samples_per_unit:
        return None
    slow, fast = case.median_s + case.iqr_s / 2, max(case.median_s - case.iqr_s / 2, 1e-12)
    return case.samples_per_unit / slow, case.samples_per_unit / fast


def distrust(run: Run, case: CaseResult | None) -> str | None:
    """Why a cell is not evidence, or None when it is."""
    if case is None:
        return "not measured"
    if case.status is Status.INVALID:
        return "invalid: it computes something else"
    if not case.ok:
        return str(case.status)
    marks = case_figures(run, case).health
    return ", ".join(marks) if marks else None


def compared(run: Run, base: CaseResult, what: str, key: CaseKey, **flags: str) -> Remedy:
    """The remedy in cell `key` against the finding's cell `base`; `flags`: what measures it."""
    other = run.case(key)
    reason = distrust(run, other)
    if other is None:
        return Remedy(what, flags=tuple(flags.items()))
    if reason is not None:
        return Remedy(what, case=key, left_out=reason)
    mine, theirs = rate_interval(base), rate_interval(other)
    if mine is None or theirs is None or not base.samples_per_s or not other.samples_per_s:
        return Remedy(what, case=key, left_out="no interval")
    gain = other.samples_per_s / base.samples_per_s
    claimed = theirs[0] > mine[1] or theirs[1] < mine[0]
    return Remedy(what, gain=gain, claimed=claimed, case=key)


def command(keys: Iterable[CaseKey], flags: Iterable[tuple[str, str]]) -> str:
    """The one `bench run` that measures a remedy for every case of `keys` (its devices, workloads and
    batch sizes), with the remedy's flags."""
    keys = list(keys)
    devices = dict.fromkeys(key.device for key in keys)
    workloads = dict.fromkeys(key.workload for key in keys)
    batches = sorted({key.batch_size for key in keys})
    parts = [f"--devices {','.join(devices)}", f"--workloads {','.join(workloads)}"]
    parts += [f"--batch-sizes {','.join(map(str, batches))}"]
    parts += [f"--{name.replace('_', '-')} {value}" for name, value in flags]
    return "bench run " + " ".join(parts)


def _family(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def data_finding(run: Run, case: CaseResult) -> Finding | None:
    """An epoch through the chapter's DataLoader that waits for its batches half the time or more."""
    share = case_figures(run, case).data_share
    if case.key.loader != "torchvision" or share is None or share < OVERHEAD_SHARE:
        return None
    resident = replace(case.key, loader="resident", **CHAPTER_LOADER)
    remedies = [compared(run, case, "device-resident data", resident, loaders="resident")]
    remedies += loader_remedies(run, case)
    return Finding(DATA, case.key, f"the DataLoader waits {share:.0%} of each epoch", remedies)


CHAPTER_LOADER: dict[str, Any] = {"workers": 0, "pin_memory": False, "persistent_workers": False,
                                  "prefetch_factor": None}  # fmt: skip


def loader_remedies(run: Run, case: CaseResult) -> list[Remedy]:
    """The other DataLoader settings the run measured for the same setup; workers (and, on a GPU,
    pinned memory) with the command that measures them when the run tried none."""
    same = [
        other for other in run.cases
        if other.key != case.key and other.key == replace(case.key, **{f: getattr(other.key, f) for f in CHAPTER_LOADER})
    ]  # fmt: skip
    remedies = [compared(run, case, variant(other.key), other.key) for other in same]
    if not any(other.key.workers for other in same) and not case.key.workers:
        remedies.append(
            Remedy("2 DataLoader workers", flags=(("loaders", "torchvision"), ("loader_workers", "0,2")))
        )
    if case.key.device.startswith("cuda") and not any(other.key.pin_memory for other in same):
        remedies.append(Remedy("pinned memory", flags=(("loaders", "torchvision"), ("pin_memory", "off,on"))))
    return remedies


def mode_remedies(run: Run, case: CaseResult, modes: Iterable[str]) -> list[Remedy]:
    return [compared(run, case, mode, replace(case.key, mode=mode), modes=f"eager,{mode}") for mode in modes]


def batch_remedy(run: Run, case: CaseResult) -> Remedy | None:
    """The fastest larger batch of the same setup that the run measured and trusts."""
    larger = [
        other
        for other in run.cases
        if other.key == replace(case.key, batch_size=other.key.batch_size)
        and other.key.batch_size > case.key.batch_size
        and distrust(run, other) is None
    ]
    if not larger:
        return None
    best = max(larger, key=lambda other: other.samples_per_s or 0)
    return compared(run, case, f"batch {best.key.batch_size}", best.key)


def step_finding(run: Run, case: CaseResult) -> Finding | None:
    """An eager step bound by per-op overhead or by arithmetic, and the modes and batches that help."""
    if case.key.mode != "eager" or case.key.loader is not None:
        return None
    figures = case_figures(run, case)
    family = _family(case.key.device)
    if figures.bound_by == OVERHEAD_BOUND and figures.overhead_share is not None:
        remedies = mode_remedies(run, case, OVERHEAD_MODES[family])
        larger = batch_remedy(run, case)
        figure = f"launches explain {figures.overhead_share:.0%} of a step (ops × per-op floor)"
        return Finding(OVERHEAD, case.key, figure, remedies + ([larger] if larger else []))
    if figures.bound_by == COMPUTE_BOUND and figures.peak_fraction is not None:
        figure = f"{figures.peak_fraction:.0%} of the measured peak"
        return Finding(COMPUTE, case.key, figure, mode_remedies(run, case, COMPUTE_MODES[family]))
    return None


def memory_finding(run: Run, case: CaseResult) -> Finding | None:
    """A batch that did not fit: the largest of the same setup that did is the remedy."""
    if case.status is not Status.OOM:
        return None
    fitted = [
        other.key.batch_size
        for other in run.cases
        if other.ok and other.key == replace(case.key, batch_size=other.key.batch_size)
    ]
    remedies = [Remedy(f"batch {max(fitted)} fits")] if fitted else []
    remedies.append(Remedy("bf16 (half the activation memory)", flags=(("modes", "eager,bf16"),)))
    return Finding(MEMORY, case.key, f"batch {case.key.batch_size} ran out of device memory", remedies)


def communication_finding(run: Run, case: CaseResult) -> Finding | None:
    """A data-parallel step that spends half its time or more in the gradient all-reduce."""
    share = case_figures(run, case).comm_share if case.ok else None
    if share is None or share < OVERHEAD_SHARE:
        return None
    larger = batch_remedy(run, case)
    figure = f"the gradient all-reduce takes {share:.0%} of a step"
    figures = case_figures(run, case)
    if figures.all_reduce_bus_bytes_per_s is not None:
        figure += f", at {figures.all_reduce_bus_bytes_per_s / 1e9:.3g} GB/s bus bandwidth"
        if figures.all_reduce_link_share is not None:
            figure += f" ({figures.all_reduce_link_share:.0%} of a large all-reduce's between the same ranks)"
    return Finding(COMMUNICATION, case.key, figure, [larger] if larger else [])


RULES = (data_finding, step_finding, memory_finding, communication_finding)


def findings(run: Run) -> list[Finding]:
    """Every finding of the run, in the order of its cases; cells not to be trusted found nothing."""
    found = []
    for case in run.cases:
        if case.status is not Status.OOM and distrust(run, case) is not None:
            continue
        for rule in RULES:
            finding = rule(run, case)
            if finding is not None:
                found.append(finding)
    return found


def untrusted(run: Run) -> list[tuple[CaseKey, str]]:
    """The cells left out of every finding, and why (contended, inconsistent ...)."""
    return [
        (case.key, reason) for case in run.cases if case.ok and (reason := distrust(run, case)) is not None
    ]
