"""Training to accuracy: when each run first reached the target, and the accuracy curve over runs.

Torch-free; read by the figures (`metrics`) and the targets.
"""

from __future__ import annotations

import statistics

from bench.core.records import PassRecord
from bench.core.results import CaseResult


def run_time_to_target(record: PassRecord, target: float) -> tuple[int | None, float | None]:
    """(epochs, training seconds) until a run's test accuracy first reaches `target`; (None, None) if never."""
    elapsed = 0.0
    for epoch, (seconds, accuracy) in enumerate(
        zip(record.samples_s, record.test_accuracy or [], strict=False), 1
    ):
        elapsed += seconds
        if accuracy >= target:
            return epoch, elapsed
    return None, None


def time_to_target(case: CaseResult, target: float) -> tuple[int, list[float | None]]:
    """How many training runs reached `target`, and each run's training seconds to it (None: never)."""
    times = [run_time_to_target(record, target)[1] for record in case.runs]
    return sum(t is not None for t in times), times


def median_time_to_target(case: CaseResult, target: float) -> float | None:
    """The median over the runs that reached the target; the others are counted, not hidden."""
    reached = [t for t in time_to_target(case, target)[1] if t is not None]
    return statistics.median(reached) if reached else None


def median_accuracy_per_epoch(case: CaseResult) -> list[float]:
    curves = [r.test_accuracy for r in case.runs if r.test_accuracy]
    return [statistics.median(values) for values in zip(*curves, strict=False)] if curves else []
