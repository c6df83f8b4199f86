"""All-reduce bandwidth as nccl-tests reports it, so a `communication` finding says how far a case's
gradient all-reduce is from what the link itself can do.

`busbw = algbw × 2(n−1)/n`, `algbw = bytes / seconds`: a ring all-reduce moves 2(n−1)/n of the
buffer through every link, so bus bandwidth compares with the link's own speed whatever the rank
count. The link's figure is a large all-reduce measured between the same ranks in the same run.
Torch-free.
"""

from __future__ import annotations

import statistics

from bench.core.results import CaseResult, Run


def bus_bandwidth(nbytes: int, seconds: float, ranks: int) -> float:
    """Bytes per second of bus bandwidth of an all-reduce of `nbytes` between `ranks` that took `seconds`."""
    return nbytes / seconds * 2 * (ranks - 1) / ranks


def gradient_bus_bandwidth(case: CaseResult) -> float | None:
    """The case's gradient all-reduce as bus bandwidth (median over its passes); None when not timed."""
    timed = [(r.comm_bytes, r.comm_s) for r in case.passes if r.comm_bytes and r.comm_s]
    if case.key.world_size < 2 or not timed:
        return None
    return statistics.median(bus_bandwidth(nbytes, seconds, case.key.world_size) for nbytes, seconds in timed)


def link_share(run: Run, case: CaseResult) -> float | None:
    """The gradient all-reduce's bus bandwidth over the large all-reduce's, measured in the same run."""
    link = run.processes.link_bus_bandwidth if run.processes is not None else None
    mine = gradient_bus_bandwidth(case)
    return mine / link if mine is not None and link else None
