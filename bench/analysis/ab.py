"""`bench ab`: paired statistics over interleaved blocks of two sides, and the rule that stops them.

The blocks run in pairs, one block of each side next to each other in time (ABBA: A B, B A, A B ...,
so a drift that is linear over two pairs cancels, and neither side always goes first). Per case, each
pair gives one ratio, B's median time over A's from the same minute of the machine: drift between
minutes, which `bench compare` cannot tell from a change, divides out. The estimate is the geometric
mean of those ratios with Student's t interval on their logs (`stats.paired_ratio_interval`, the
paired t-test; the pairs are the units). The rule looks at the intervals after every pair, and each
look is a chance of a false alarm, so each interval is at 99% (`LOOK_CONFIDENCE`), divided further
over the cases (Bonferroni). In a simulation of A against itself, stopping at the first verdict
within 16 pairs (from the fourth), 99% intervals called a difference in about 5% of runs at 8% noise
per pair where 95% ones called it in about 20%, and still called a 10% change in 97% of runs. A
percentile bootstrap of the median ratio, tried first, was too narrow over so few pairs (11% false
alarms at 99%), so the mean of log ratios it is; a block that was disturbed (contended) is left out
rather than outvoted.

Verdict at the resolution X (`--resolution`, a fraction): `same within ±X` when the whole interval
lies between 1/(1+X) and 1+X (an equivalence test: any change is smaller than X); otherwise
`B slower` when the interval lies above 1, `B faster` when below; otherwise `undecided`. No verdict
before `MIN_PAIRS` pairs: an interval from fewer rests on too little to know the noise. Blocks go
on until every case has a verdict or the budget of measuring seconds (the counted blocks' own) is spent.

A pair counts for a case only when both its blocks measured the case (`ok`) and, unless asked
otherwise, neither was `contended` (its threads waited for CPUs other work held): a marked cell is
shown, never used as evidence. Torch-free.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from random import Random

from bench.core.stats import paired_ratio_interval

A, B = "A", "B"
SIDES = (A, B)
FASTER, SLOWER, UNDECIDED = "B faster", "B slower", "undecided"
LOOK_CONFIDENCE = 0.99  # each look's intervals, all cases together
RESOLUTION = 0.05
MIN_PAIRS = 4
ORDERS = ("abba", "random")


def same_verdict(resolution: float) -> str:
    return f"same within ±{resolution * 100:g}%"


def pair_order(pair: int, order: str = "abba", generator: Random | None = None) -> tuple[str, str]:
    """The sides of the `pair`-th pair (warm-ups included): ABBA alternates, random draws each pair."""
    if order == "abba":
        return (A, B) if pair % 2 == 0 else (B, A)
    if order == "random":
        return (A, B) if (generator or Random(pair)).random() < 0.5 else (B, A)
    raise ValueError(f"order is one of {', '.join(ORDERS)}")


@dataclass(frozen=True)
class BlockCase:
    """One case as one block measured it: its label on that side, its median, whether it counts."""

    label: str
    status: str
    median_s: float | None
    samples_s: list[float] = field(default_factory=list)
    contended: bool = False


@dataclass(frozen=True)
class Block:
    """One fresh `bench run` process of one side: where it wrote, how long it measured, its cases."""

    index: int
    side: str
    warmup: bool
    folder: str
    exit_code: int
    measured_s: float  # from the run's start (after start-up) to its end: the time spent measuring
    wall_s: float  # the whole process, start-up included
    cases: list[BlockCase] = field(default_factory=list)


@dataclass(frozen=True)
class CaseVerdict:
    """A case's paired estimate: the ratios B/A of its counted pairs, their median, interval and verdict."""

    index: int
    label_a: str
    label_b: str
    ratios: list[float]
    dropped: int  # pairs left out for this case (a block failed or was contended)
    ratio: float | None
    low: float | None
    high: float | None
    verdict: str
    median_a_s: float | None = None
    median_b_s: float | None = None

    @property
    def decided(self) -> bool:
        return self.verdict != UNDECIDED

    @property
    def pairs(self) -> int:
        return len(self.ratios)

    @property
    def label(self) -> str:
        return self.label_a if self.label_a == self.label_b else f"{self.label_a} vs {self.label_b}"


def counted_pairs(blocks: Sequence[Block]) -> list[tuple[Block, Block]]:
    """The counted blocks in consecutive twos, as (A's block, B's block); a lone last block waits."""
    counted = [block for block in blocks if not block.warmup]
    pairs = []
    for first, second in zip(counted[0::2], counted[1::2], strict=False):
        if {first.side, second.side} != {A, B}:
            raise ValueError(f"blocks {first.index} and {second.index} are not one of each side")
        pairs.append((first, second) if first.side == A else (second, first))
    return pairs


def usable(case: BlockCase | None, use_contended: bool) -> bool:
    return (
        case is not None
        and case.status == "ok"
        and bool(case.median_s)
        and (use_contended or not case.contended)
    )


def case_ratios(
    pairs: Sequence[tuple[Block, Block]], index: int, use_contended: bool = False
) -> tuple[list[float], int]:
    """The ratios B/A of case `index` over the pairs, and how many pairs were left out for it."""
    ratios, dropped = [], 0
    for block_a, block_b in pairs:
        a = block_a.cases[index] if index < len(block_a.cases) else None
        b = block_b.cases[index] if index < len(block_b.cases) else None
        if usable(a, use_contended) and usable(b, use_contended):
            assert a is not None and b is not None and a.median_s and b.median_s
            ratios.append(b.median_s / a.median_s)
        else:
            dropped += 1
    return ratios, dropped


def verdict(low: float, high: float, pairs: int, resolution: float) -> str:
    """The verdict of an interval for B/A (see the module's docstring)."""
    if pairs < MIN_PAIRS:
        return UNDECIDED
    if low > 1 / (1 + resolution) and high < 1 + resolution:
        return same_verdict(resolution)
    if low > 1:
        return SLOWER
    if high < 1:
        return FASTER
    return UNDECIDED


def case_confidence(cases: int) -> float:
    """Each case's confidence, so that the intervals of all cases hold together at 99% (Bonferroni)."""
    return 1 - (1 - LOOK_CONFIDENCE) / max(cases, 1)


def judge_case(
    index: int,
    label_a: str,
    label_b: str,
    ratios: Sequence[float],
    dropped: int,
    resolution: float = RESOLUTION,
    confidence: float = LOOK_CONFIDENCE,
) -> CaseVerdict:
    if not ratios:
        return CaseVerdict(index, label_a, label_b, [], dropped, None, None, None, UNDECIDED)
    estimate = paired_ratio_interval(ratios, confidence)
    low, high = estimate.low, estimate.high
    return CaseVerdict(
        index, label_a, label_b, list(ratios), dropped, estimate.ratio, low, high,
        verdict(low, high, len(ratios), resolution),
    )  # fmt: skip


def side_median(blocks: Sequence[Block], side: str, index: int, use_contended: bool) -> float | None:
    """The median over a side's counted blocks of a case's block medians (for the table, not the test)."""
    medians = [
        case.median_s
        for block in blocks
        if block.side == side and not block.warmup and index < len(block.cases)
        for case in [block.cases[index]]
        if usable(case, use_contended) and case.median_s
    ]
    return statistics.median(medians) if medians else None


def judge(
    blocks: Sequence[Block], resolution: float = RESOLUTION, use_contended: bool = False
) -> list[CaseVerdict]:
    """Every case's verdict from the blocks so far (cases matched by their position in the plan)."""
    pairs = counted_pairs(blocks)
    first = {side: next((b for b in blocks if b.side == side), None) for side in SIDES}
    count = max((len(block.cases) for block in blocks), default=0)
    confidence = case_confidence(count)
    verdicts = []
    for index in range(count):
        labels = [
            block.cases[index].label if block and index < len(block.cases) else "?"
            for block in (first[A], first[B])
        ]
        ratios, dropped = case_ratios(pairs, index, use_contended)
        row = judge_case(index, labels[0], labels[1], ratios, dropped, resolution, confidence)
        verdicts.append(
            replace(
                row,
                median_a_s=side_median(blocks, A, index, use_contended=True),  # shown, not tested
                median_b_s=side_median(blocks, B, index, use_contended=True),
            )
        )
    return verdicts


ALL_DECIDED, BUDGET_SPENT, PAIRS_DONE, INTERRUPTED = (
    "every case decided",
    "budget spent",
    "--max-pairs reached",
    "interrupted",
)


def stop_reason(
    verdicts: Sequence[CaseVerdict],
    measured_s: float,
    budget_s: float,
    pairs: int,
    max_pairs: int | None = None,
) -> str | None:
    """Why the blocks stop now, or None to go on: every case decided, the budget spent, or the pair limit."""
    if verdicts and all(row.decided for row in verdicts):
        return ALL_DECIDED
    if measured_s >= budget_s:
        return BUDGET_SPENT
    if max_pairs is not None and pairs >= max_pairs:
        return PAIRS_DONE
    return None
