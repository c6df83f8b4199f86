"""What every rendering of a run starts with: its state, data, machine, load, timing, peaks, command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.analysis.health import inconsistencies
from bench.core.catalog import PRECISIONS, dataset_display_name
from bench.core.facts import fact, fact_text
from bench.core.records import CONTENDED_WAIT_SHARE
from bench.core.results import MeterFacts, Peaks, Run, TimingPolicy
from bench.render.units import fmt_bandwidth, fmt_flops, fmt_seconds


def how_it_ended(run: Run) -> str:
    """complete, interrupted by SIGTERM, failed; a file still at `running` is a process that died."""
    if run.state == "running":
        return "ended without a word (killed, or still running)"
    return f"interrupted by {run.stopped_by}" if run.state == "interrupted" and run.stopped_by else run.state


def environment_line(env: Any) -> str:
    """One line for table headers: torch build, CPU, threads, GPUs."""
    devices = fact(env, "cuda", "devices")
    names = [fact_text(d, "name") for d in devices] if isinstance(devices, list) else []
    image = fact(env, "container", "image")
    where = f"; container image {image}" if isinstance(image, str) else ""
    return (
        f"torch {fact_text(env, 'torch', 'version')} ({fact_text(env, 'torch', 'build')}), "
        f"torchvision {fact_text(env, 'torchvision', 'version', missing='unavailable')}, "
        f"Python {fact_text(env, 'python', 'version')}; CPU {fact_text(env, 'cpu', 'model')} "
        f"({fact_text(env, 'cpu', 'usable_cpus')} usable CPUs, {fact_text(env, 'cpu', 'torch_threads')} torch "
        f"threads); GPUs: {', '.join(names) or 'none'}{where}"
    )


def contention_lines(run: Run, strong: Callable[[str], str], code: Callable[[str], str]) -> list[str]:
    """How many cases rest on passes whose threads waited for CPUs, and what to do about it."""
    measured = [c for c in run.cases if c.passes and any(r.contention is not None for r in c.passes)]
    if not measured:
        return []
    contended = [c for c in measured if c.contended]
    if not contended:
        return [f"Contention: none ({len(measured)} cases measured with their CPUs to themselves)."]
    return [
        f"{strong(f'CONTENDED: {len(contended)} of {len(measured)} cases')}: their threads waited for a CPU "
        f"more than {CONTENDED_WAIT_SHARE:.0%} of the time in every pass (other work held the CPUs). Their "
        "cells are marked ‼ and left out of speedups, verdicts and compare's decisions. Stop the other work "
        f"(or run with fewer {code('--threads')}) and run again."
    ]


def consistency_lines(run: Run, strong: Callable[[str], str]) -> list[str]:
    """How many cases contradict a nested workload of the same setup (forward slower than
    forward_backward): such figures cannot all be right, whatever the machine did."""
    found = {c.key: marks for c in run.cases if (marks := inconsistencies(run, c))}
    if not found:
        return []
    examples = "; ".join(f"{key.label()}: {', '.join(marks)}" for key, marks in list(found.items())[:3])
    more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
    return [
        f"{strong(f'INCONSISTENT: {len(found)} cases')}: a lighter workload measured slower per sample than a "
        f"heavier one of the same setup, beyond both intervals: {examples}{more}. Their health column says "
        "which; at least one figure of each pair is wrong (usually a busy machine): run them again."
    ]


def header_lines(run: Run, markup: bool = True) -> list[str]:
    """State, dataset (synthetic said loudly), environment, load, timing, processes, peaks, command.

    `markup=False` gives the same lines for a terminal: no Markdown emphasis or code marks.
    """

    def strong(text: str) -> str:
        return f"**{text}**" if markup else text

    def code(text: str) -> str:
        return f"`{text}`" if markup else text

    dataset = run.dataset
    lines = []
    if run.partial:
        lines.append(
            f"{strong('PARTIAL RUN')} ({how_it_ended(run)}): {len(run.cases)} of {run.planned_cases} planned cases "
            "finished; the missing cells were never measured."
        )
    elif run.state == "complete":
        lines.append(f"Complete run: {len(run.cases)} cases.")
    else:
        lines.append(f"Every planned case was measured ({len(run.cases)}); the run then {how_it_ended(run)}.")
    name = "SYNTHETIC" if dataset.synthetic else dataset_display_name(dataset.name)
    data_line = (
        f"Dataset: {strong(name)} ({dataset.train_samples:,} training / {dataset.test_samples:,} test images) "
        f"from {code(dataset.source)}"
    )
    if dataset.synthetic:
        data_line += " — " + strong("synthetic data: throughput is real, accuracy is not meaningful")
    lines.append(data_line + ".")
    if dataset.note and not dataset.synthetic:
        lines.append(f"Note: {dataset.note}.")
    elif dataset.note and dataset.requested == "auto":
        lines.append(f"Why synthetic: {dataset.note}.")
    lines.append(f"Environment: {environment_line(run.env)}.")
    lines += contention_lines(run, strong, code)
    lines += consistency_lines(run, strong)
    loadavg = fact(run.env, "load", "loadavg")
    if isinstance(loadavg, list):
        busy = fact(run.env, "load", "busy_processes")
        names = (
            ", ".join(f"{fact_text(p, 'name')} ({fact_text(p, 'cpu_percent')}%)" for p in busy)
            if isinstance(busy, list)
            else ""
        )
        lines.append(
            f"Load at start: {' '.join(map(str, loadavg))} (1/5/15 min); other busy processes: {names or 'none'}."
        )
    during = run.during_run
    if during is not None and during.steal_percent is not None:
        end = during.loadavg_end
        lines.append(
            f"During the run: the hypervisor took {during.steal_percent:.1f}% of CPU time (steal); load average "
            f"at the end {' '.join(map(str, end)) if end else '?'}."
        )
    lines.append(f"Timing: {timing_text(run.timing)}.")
    spread = run.processes
    if spread is not None:
        lines.append(
            f"Processes: {spread.world_size} started by torchrun on {spread.nnodes} machine(s), {spread.backend}; "
            f"on the CPU each runs {spread.threads_per_process} thread(s), an equal share of the usable CPUs."
            + (
                f" A large all-reduce between them: {fmt_bandwidth(spread.link_bus_bandwidth)} bus bandwidth."
                if spread.link_bus_bandwidth
                else ""
            )
        )
    peaks = peaks_lines(run.peaks)
    if peaks:
        lines.append(f"Measured peaks: {'; '.join(peaks)}.")
    if run.command_line:
        lines.append(f"Command: {code(run.command_line)}; run {run.run_id}, started {run.created}.")
    return lines


def timing_text(timing: TimingPolicy | None) -> str:
    """How this run timed its work, as it recorded it (older files did not record it: said so)."""
    if timing is None:
        return "not recorded (a results file from before torch-bench recorded its timing policy)"
    reads = [
        f"{device} {fmt_seconds(overhead)} per read, rounds of at least "
        f"{fmt_seconds(timing.min_round_s.get(device))}"
        for device, overhead in timing.clock_overhead_s.items()
    ]
    return f"{timing.gc}; device clock: {'; '.join(reads)} (the clock stays under 1% of a round)"


def peaks_lines(peaks: dict[str, Peaks]) -> list[str]:
    """`cpu: float32 110 GFLOP/s (1024² matmul), bfloat16 ...; per-op floor 1.0 µs`, per device."""
    lines = []
    for where, figures in peaks.items():
        parts = [
            f"{name} {fmt_flops(figures.flops(name))} ({figures.side(name)}² matmul)"
            for name in PRECISIONS
            if figures.flops(name) is not None
        ]
        lines.append(f"{where}: {', '.join(parts)}; per-op floor {fmt_seconds(figures.op_floor_s)}")
    return lines


def energy_lines(meters: dict[str, MeterFacts]) -> list[str]:
    return [
        f"{device}: {meter.source}" if meter.available else f"{device}: not available: {meter.reason}"
        for device, meter in meters.items()
    ]
