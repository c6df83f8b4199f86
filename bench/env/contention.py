"""How long this process's own threads waited for a CPU while a pass was timed.

Spread and load averages cannot tell a ruined measurement from a fine one: a pass of the MLP's
forward at 2 threads waited 1-2% of its wall time for a CPU on a quiet 2-vCPU VM and 75-135% with
one CPU hog beside it, while its throughput fell 4-19x. Linux keeps that wait per thread
(`/proc/self/task/*/schedstat`, second field: nanoseconds runnable but not running); it costs a
file read per thread and works inside containers, where other processes are invisible. Where it
cannot be read (macOS, restricted kernels), involuntary context switches (psutil) stand in, and
the record says which source it came from. The machine's steal time (a hypervisor giving the VM's
CPUs to a neighbour) is read alongside from `/proc/stat`.

A thread also waits when the CPUs are held by this process's own children: the DataLoader's worker
processes on a 2-CPU machine keep the main process's torch threads waiting 20-60% of an epoch with
nothing else running. That wait is the cost of the setting being measured, not a disturbance, so the
CPU time other processes used on this process's CPUs over the pass (the machine's busy time there,
less this process tree's) is read too, and a wait counts as contention only when others were busy.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.core.records import ContentionRecord

PROC = Path("/proc")
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
RAN_SHARE = 0.01  # a thread that ran less than 1% of the pass took no part in it (idle pool threads)


@dataclass(frozen=True)
class Reading:
    """One moment: per thread (on-CPU ns, run-queue wait ns), or the involuntary switches; the steal."""

    at: float
    threads: dict[str, tuple[int, int]] | None
    involuntary_switches: int | None
    steal_ticks: int | None
    usable_busy_s: float | None = None  # CPU time used on this process's CPUs so far, by anyone
    tree_cpu_s: float | None = None  # CPU time of this process and its descendants so far
    cpu_mhz: float | None = None  # the slowest usable CPU's clock now
    cpu_max_mhz: float | None = None  # its rated maximum, where the platform says


def _schedstat(proc: Path) -> dict[str, tuple[int, int]] | None:
    tasks = proc / "self" / "task"
    try:
        names = os.listdir(tasks)
    except OSError:
        return None
    threads = {}
    for name in names:
        try:
            fields = (tasks / name / "schedstat").read_text().split()
            threads[name] = (int(fields[0]), int(fields[1]))
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return threads or None


def _steal_ticks(proc: Path) -> int | None:
    try:
        first = (proc / "stat").read_text().splitlines()[0].split()
        return int(first[8]) if first[0] == "cpu" and len(first) > 8 else None
    except (OSError, ValueError, IndexError):
        return None


def _involuntary_switches() -> int | None:
    try:
        return int(psutil.Process().num_ctx_switches().involuntary)
    except (psutil.Error, AttributeError, NotImplementedError):  # a platform without the counter
        return None


def _usable_busy_s() -> float | None:
    """CPU seconds spent so far on the CPUs this process may run on, by any process (idle, iowait and
    steal left out)."""
    try:
        per_cpu = psutil.cpu_times(percpu=True)
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(len(per_cpu))
        return sum(
            t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
            for index, t in enumerate(per_cpu)
            if index in usable
        )
    except (psutil.Error, OSError, AttributeError):
        return None


def _tree_cpu_s() -> float | None:
    """CPU seconds of this process and all its descendants, live or ended: a live one counts itself,
    an ended one is in its parent's children times, so each counts once as workers come and go."""
    try:
        me = psutil.Process()
        total = 0.0
        for process in [me, *me.children(recursive=True)]:
            try:
                t = process.cpu_times()
            except psutil.Error:
                continue  # ended between the listing and the reading: its parent will count it
            total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
        return total
    except (psutil.Error, OSError):
        return None


def _cpu_mhz() -> tuple[float | None, float | None]:
    """The lowest current clock among the usable CPUs and the highest rated maximum (MHz), where
    readable (Linux cpufreq or /proc/cpuinfo; a VM often reports a fixed figure)."""
    try:
        per_cpu = psutil.cpu_freq(percpu=True) or []
    except (OSError, AttributeError, NotImplementedError, RuntimeError):
        return None, None
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(len(per_cpu))
    chosen = [f for index, f in enumerate(per_cpu) if index in usable] or list(per_cpu)
    current = [f.current for f in chosen if f.current and f.current > 0]
    rated = [f.max for f in chosen if f.max and f.max > 0]
    return (min(current) if current else None), (max(rated) if rated else None)


def read(proc: Path = PROC, *, others: bool = True) -> Reading:
    """One reading of the sources; `others` also reads the machine's and this tree's CPU time and
    the CPUs' clocks."""
    busy, tree = (_usable_busy_s(), _tree_cpu_s()) if others else (None, None)
    mhz, max_mhz = _cpu_mhz() if others else (None, None)
    threads = _schedstat(proc)
    switches = None if threads is not None else _involuntary_switches()
    return Reading(time.perf_counter(), threads, switches, _steal_ticks(proc), busy, tree, mhz, max_mhz)


def between(before: Reading, after: Reading, cpus: int | None = None) -> ContentionRecord | None:
    """The contention of the stretch between two readings, or None where neither source works."""
    wall = after.at - before.at
    if wall <= 0:
        return None
    steal = None
    if before.steal_ticks is not None and after.steal_ticks is not None:
        steal = max(0, after.steal_ticks - before.steal_ticks) / TICKS_PER_S
    cpus = cpus or os.cpu_count() or 1
    others = None
    if None not in (before.usable_busy_s, after.usable_busy_s, before.tree_cpu_s, after.tree_cpu_s):
        busy = after.usable_busy_s - before.usable_busy_s  # type: ignore[operator]
        mine = after.tree_cpu_s - before.tree_cpu_s  # type: ignore[operator]
        others = round(max(0.0, busy - mine), 4)
    clocks = [r.cpu_mhz for r in (before, after) if r.cpu_mhz is not None]
    mhz, max_mhz = (round(min(clocks), 1) if clocks else None), after.cpu_max_mhz
    if before.threads is not None and after.threads is not None:
        ran, wait = 0, 0
        for name, (run_ns, wait_ns) in after.threads.items():
            run0, wait0 = before.threads.get(name, (0, 0))
            wait += max(0, wait_ns - wait0)
            ran += (run_ns - run0) / 1e9 >= RAN_SHARE * wall
        return ContentionRecord(
            "schedstat", round(wall, 6), max(ran, 1), wait_s=wait / 1e9, steal_s=steal, cpus=cpus,
            others_cpu_s=others, cpu_mhz=mhz, cpu_max_mhz=max_mhz,
        )  # fmt: skip
    if before.involuntary_switches is not None and after.involuntary_switches is not None:
        switches = max(0, after.involuntary_switches - before.involuntary_switches)
        return ContentionRecord("ctx_switches", round(wall, 6), 1, involuntary_switches=switches, steal_s=steal,
                                cpus=cpus, others_cpu_s=others, cpu_mhz=mhz, cpu_max_mhz=max_mhz)  # fmt: skip
    return None


class Watch:
    """`with Watch() as watch: ...` then `watch.record`: the contention of what ran inside."""

    def __init__(self, proc: Path = PROC, *, others: bool = True) -> None:
        self.proc = proc
        self.others = others
        self.record: ContentionRecord | None = None
        self._before: Reading | None = None

    def __enter__(self) -> Watch:
        self._before = read(self.proc, others=self.others)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._before is not None:
            self.record = between(self._before, read(self.proc, others=self.others))


def probe_wait_share(seconds: float = 0.2, proc: Path = PROC) -> float | None:
    """Spins this thread for `seconds`: the share of it the thread waited for a CPU (None: unknown).
    Before a run, and where other processes are invisible (containers), this is what shows a busy
    machine."""
    with Watch(proc, others=False) as watch:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    record = watch.record
    return record.wait_share if record is not None else None


RUNNABLE_BUSY_PERCENT = 5.0  # a process waiting to run counts from this share of a CPU


def collect_load(sample_s: float = 0.2, busy_percent: float = 20.0) -> dict[str, Any]:
    """What could disturb timings: load average, and other processes busy right now: those that took
    `busy_percent` of a CPU over the sample, or, on a machine so loaded that every process gets a small
    share, those runnable now that took at least RUNNABLE_BUSY_PERCENT (a spinning hog among many)."""
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
            runnable = percent >= RUNNABLE_BUSY_PERCENT and process.status() == psutil.STATUS_RUNNING
        except psutil.Error:
            continue
        if process.pid != me and (percent >= busy_percent or runnable):
            busy.append({"pid": process.pid, "name": process.info["name"], "cpu_percent": round(percent)})
    busy.sort(key=lambda entry: -entry["cpu_percent"])
    return {
        "loadavg": load,
        "busy_processes": busy[:10],
        "cpu_percent": psutil.cpu_percent(None),
        "probe_wait_share": probe_wait_share(),
    }


def cpu_time_split() -> dict[str, float]:
    """Machine-wide CPU seconds so far by kind; two readings give what happened in between."""
    times = psutil.cpu_times()
    return {"total": sum(times), "steal": getattr(times, "steal", 0.0), "idle": times.idle}


def disturbance_between(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Share of CPU time the hypervisor took (steal) between two readings, plus load now."""
    total = after["total"] - before["total"]
    steal = after["steal"] - before["steal"]
    return {
        "steal_percent": round(100 * steal / total, 2) if total > 0 else None,
        "loadavg_end": [round(value, 2) for value in os.getloadavg()],
    }
