"""Why a case's figures are not to be trusted: the marks of its `health` (results.csv's column).

Kept apart from the figures themselves (`metrics`): contention and inconsistency are judgements
about a measurement, not figures of it.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

from bench.core.facts import fact
from bench.core.results import CaseResult, Run


def health(run: Run, case: CaseResult, fraction: float | None) -> list[str]:
    """Why a case's figure is not to be trusted: `contended` (its passes waited for CPUs), `throttled`
    or `shared` (its GPU slowed down or served other processes), `above-peak` (more FLOP/s than the device's measured peak: the peak was measured while busy)."""
    marks = ["contended"] if case.contended else []
    marks += ["oversubscribed"] if oversubscribed(run, case) else []
    marks += case.device_marks
    marks += inconsistencies(run, case)
    if fraction is not None and fraction > 1:
        marks.append("above-peak")
    return marks


def oversubscribed(run: Run, case: CaseResult) -> bool:
    """More CPU threads (over all its processes) than the CPUs the run could use: they wait for each
    other at every op, whatever else the machine does."""
    cpus = fact(run.env, "cpu", "usable_cpus")
    threads = case.key.threads
    if case.key.device != "cpu" or threads is None or not isinstance(cpus, (int, float)) or cpus <= 0:
        return False
    return threads * max(1, case.key.processes) > cpus


# each does the work of the one before and more: per sample, none may be faster than the one before
NESTED_WORKLOADS = ("forward", "forward_backward", "train_step")


def _bounds(case: CaseResult | None) -> tuple[float, float] | None:
    """The quartiles of a case's time per call (its interval), where it measured."""
    if case is None or not case.ok or case.median_s is None or case.iqr_s is None:
        return None
    return case.median_s - case.iqr_s / 2, case.median_s + case.iqr_s / 2


def inconsistencies(run: Run, case: CaseResult) -> list[str]:
    """The nested workloads of the same setup that this case contradicts: `forward` slower than
    `forward_backward` (beyond both intervals) cannot be right, whatever the machine did."""
    if case.key.workload not in NESTED_WORKLOADS:
        return []
    index = NESTED_WORKLOADS.index(case.key.workload)
    mine, found = _bounds(case), []
    for other_index, name in enumerate(NESTED_WORKLOADS):
        if other_index == index:
            continue
        theirs = _bounds(run.case(replace(case.key, workload=name)))
        if mine is None or theirs is None:
            continue
        smaller_first = (mine, theirs) if index < other_index else (theirs, mine)
        if smaller_first[0][0] > smaller_first[1][1]:  # the lighter workload's best beats nothing: slower
            lighter, heavier = sorted((case.key.workload, name), key=NESTED_WORKLOADS.index)
            found.append(f"inconsistent: {lighter} slower than {heavier}")
    return found


def run_queue_wait(case: CaseResult) -> float | None:
    """The median share of their time the case's threads waited for a CPU, over its passes."""
    shares = [r.contention.wait_share for r in case.passes if r.contention is not None]
    known = [s for s in shares if s is not None]
    return statistics.median(known) if known else None


def others_cpus(case: CaseResult) -> float | None:
    """The median CPUs' worth other processes used beside the case's passes (its own workers not
    counted): what tells a wait for a neighbour from a wait for the setting's own worker processes."""
    known = [r.contention.others_cpus for r in case.passes if r.contention is not None]
    shares = [s for s in known if s is not None]
    return statistics.median(shares) if shares else None


def cpu_mhz(case: CaseResult) -> float | None:
    """The lowest CPU clock read around the case's passes (MHz): a laptop on battery or a hot CPU
    runs well below its rated clock, and its figures with it."""
    clocks = [r.contention.cpu_mhz for r in case.passes if r.contention is not None]
    known = [c for c in clocks if c is not None]
    return min(known) if known else None
