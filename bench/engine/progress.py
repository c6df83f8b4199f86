"""What the sweep says while it runs: one line per item with the time elapsed and left, and a line
for each finished case."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.core.keys import CaseKey
from bench.core.plan import Item
from bench.core.results import CaseResult

Say = Callable[[str], None]


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    """`0:42`, `12:05`, `1:02:03`."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def estimate_remaining(finished: list[tuple[Item, float]], remaining: list[Item]) -> float | None:
    """Seconds the remaining items should take, judged by the items already measured.

    Each remaining item is priced by what the same case cost in earlier passes, else by what its
    workload cost so far, else by the average item; epochs and runs count per repeat. None until
    something has finished.
    """
    if not finished:
        return None

    def units(item: Item) -> int:
        return max(item.repeats, 1)

    by_key: dict[CaseKey, list[float]] = {}
    by_workload: dict[str, list[float]] = {}
    for item, seconds in finished:
        by_key.setdefault(item.key, []).append(seconds / units(item))
        by_workload.setdefault(item.key.workload, []).append(seconds / units(item))
    average = sum(seconds for _, seconds in finished) / len(finished)
    total = 0.0
    for item in remaining:
        known = by_key.get(item.key) or by_workload.get(item.key.workload)
        total += sum(known) / len(known) * units(item) if known else average
    return total


def describe(result: CaseResult) -> str:
    """The progress line for a finished case."""
    if not result.ok:
        return f"{str(result.status).upper()}: {result.error}"
    spread = f"spread {result.spread:.1%}" if result.spread is not None else "spread n/a"
    noisy = " NOISY" if result.noisy else ""
    accuracy = f", test accuracy {result.final_accuracy:.1%}" if result.final_accuracy is not None else ""
    rate = result.samples_per_s or 0.0
    return f"{rate:,.0f} samples/s, median {result.median_s:.4g} s ({spread}{noisy}, n={result.n}){accuracy}"


@dataclass
class Progress:
    """Counts the items as they come and prices what is left."""

    items: list[Item]
    passes: int
    say: Say = to_stderr
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    finished: list[tuple[Item, float]] = field(default_factory=list)

    def starting(self, item: Item) -> None:
        if item.pass_index >= self.passes:
            passes = " (again: its passes waited for CPUs)"
        else:
            passes = f" (pass {item.pass_index + 1}/{self.passes})" if self.passes > 1 else ""
        elapsed = format_duration(time.perf_counter() - self.started)
        left = estimate_remaining(self.finished, self.items[self.done - 1 :])
        timing = f"{elapsed} elapsed" + (f", about {format_duration(left)} left" if left is not None else "")
        self.say(f"[{self.done:>3}/{len(self.items)}] {timing} · {item.key.label()}{passes} ...")

    def note(self, text: str) -> None:
        self.say(f"        {text}")
