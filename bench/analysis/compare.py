"""`bench compare A B`: per case, B's time relative to A's, with a verdict drawn from the raw samples.

The test is Welch's t on log times over independent units (`CaseResult.independent_samples`: one
median per pass, one value per training run), giving an interval for B/A. The
intervals hold jointly at 95% (Bonferroni over the compared cases), so comparing forty cases does
not produce two false alarms by chance. A case is called slower or faster only when its interval
excludes 1 *and* the ratio lies beyond a floor either way (B/A above 1 + floor or below
1 / (1 + floor), so halving and doubling weigh the same): `MIN_EFFECT`, or the runs' own noise level
(the median spread IQR/median of their cells) when that is larger. On a shared machine whose speed drifts by tens of
percent from one minute to the next, no within-run statistic sees the drift between two runs; the
floor keeps such drift from being reported as a change, and the report prints the floor it used.
Rounds timed back to back inside one pass are not independent either, hence the single-pass warning.

Per case the report also gives the smallest change it could have detected with its units, their
noise and the correction (`stats.detectable_ratio`), and where that exceeds 2x, how many passes
would bring it under 20% (`stats.units_needed`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench.core.catalog import workload
from bench.core.facts import fact
from bench.core.keys import CaseKey
from bench.core.results import CaseResult, Run
from bench.core.stats import RatioEstimate, detectable_ratio, ratio_interval, units_needed

MIN_EFFECT = 0.05
FAMILY_CONFIDENCE = 0.95
BLIND_ABOVE = 2.0  # a case that cannot see a doubling gets a suggestion
WANTED_DETECTABLE = 1.2
FASTER, SLOWER, SAME = "faster", "slower", "no significant change"

# facts that make two runs' numbers incomparable when they differ: (label, path into env)
ENV_FACTS = (
    ("host", ("host",)),
    ("torch", ("torch", "version")),
    ("CUDA build", ("torch", "cuda")),
    ("cuDNN", ("torch", "cudnn")),
    ("torchvision", ("torchvision", "version")),
    ("Python", ("python", "version")),
    ("CPU", ("cpu", "model")),
    ("usable CPUs", ("cpu", "usable_cpus")),
    ("torch threads", ("cpu", "torch_threads")),
    ("NVIDIA driver", ("nvml", "driver_version")),
    ("container image", ("container", "image")),
    ("TF32 matmul", ("torch", "flags", "cuda_matmul_allow_tf32")),
)


@dataclass(frozen=True)
class ComparisonRow:
    key: CaseKey
    a: CaseResult | None
    b: CaseResult | None
    estimate: RatioEstimate | None
    verdict: str
    detectable: float | None = None  # the smallest slowdown (B/A) this case could have called
    passes_needed: int | None = None  # passes per run that would make it WANTED_DETECTABLE, if blind

    @property
    def change_percent(self) -> float:
        """Change of B's time against A's, in percent (+ = slower)."""
        return (self.estimate.ratio - 1) * 100 if self.estimate else 0.0


@dataclass
class Comparison:
    a: Run
    b: Run
    rows: list[ComparisonRow]
    warnings: list[str] = field(default_factory=list)
    asked_min_effect: float = MIN_EFFECT  # --min-effect
    case_confidence: float = FAMILY_CONFIDENCE
    noise: tuple[float | None, float | None] = (None, None)

    @property
    def min_effect(self) -> float:
        """The floor used: the asked-for minimum, or the larger noise level of the two runs."""
        return change_floor(self.asked_min_effect, self.noise)

    def slowdowns_above(self, percent: float) -> list[ComparisonRow]:
        return [row for row in self.rows if row.verdict == SLOWER and row.change_percent > percent]


def compare_runs(a: Run, b: Run, min_effect: float = MIN_EFFECT) -> Comparison:
    """Pairs the cases of two runs by workload, device, batch size and loader, and judges each pair."""
    cases_a = {case.key: case for case in a.cases}
    cases_b = {case.key: case for case in b.cases}
    keys = list(dict.fromkeys([*cases_a, *cases_b]))
    testable = sum(
        1
        for key in keys
        if key in cases_a
        and key in cases_b
        and cases_a[key].ok
        and cases_b[key].ok
        and min(len(cases_a[key].independent_samples()), len(cases_b[key].independent_samples())) >= 2
    )
    confidence = 1 - (1 - FAMILY_CONFIDENCE) / max(testable, 1)
    noise = (noise_level(a), noise_level(b))
    floor = change_floor(min_effect, noise)
    rows = [_judge(key, cases_a.get(key), cases_b.get(key), floor, confidence) for key in keys]
    return Comparison(a, b, rows, environment_differences(a, b), min_effect, confidence, noise)


def change_floor(min_effect: float, noise: tuple[float | None, float | None]) -> float:
    """The smallest change called one: `min_effect`, or the runs' noise level when that is larger."""
    return max([min_effect, *[level for level in noise if level is not None]])


def noise_level(run: Run) -> float | None:
    """The run's typical cell spread (median of IQR/median over its timed cells), or None."""
    spreads = sorted(case.spread for case in run.cases if case.ok and case.spread is not None)
    return statistics.median(spreads) if spreads else None


def beyond_floor(ratio: float, floor: float) -> bool:
    """Whether B/A is a change larger than `floor` in either direction, measured as a factor."""
    return ratio > 1 + floor or ratio < 1 / (1 + floor)


def _judge(
    key: CaseKey, a: CaseResult | None, b: CaseResult | None, min_effect: float, confidence: float
) -> ComparisonRow:
    if a is None or b is None:
        return ComparisonRow(key, a, b, None, "only in B" if a is None else "only in A")
    if not a.ok or not b.ok:
        failed = " and ".join(name for name, case in (("A", a), ("B", b)) if not case.ok)
        status = "/".join(sorted({case.status.upper() for case in (a, b) if not case.ok}))
        return ComparisonRow(key, a, b, None, f"{status} in {failed}")
    if a.contended or b.contended:
        busy = " and ".join(name for name, case in (("A", a), ("B", b)) if case.contended)
        return ComparisonRow(key, a, b, None, f"contended in {busy}: not compared")
    units_a, units_b = a.independent_samples(), b.independent_samples()
    estimate = ratio_interval(units_a, units_b, confidence)
    if not estimate.testable:
        return ComparisonRow(key, a, b, estimate, "one sample: cannot tell")
    verdict = SAME
    if estimate.significant and beyond_floor(estimate.ratio, min_effect):
        verdict = SLOWER if estimate.ratio > 1 else FASTER
    interval = detectable_ratio(units_a, units_b, confidence)
    detectable = None if interval is None else max(interval, 1 + min_effect)
    needed = None
    if detectable is not None and detectable > BLIND_ABOVE:
        needed = units_needed(units_a, units_b, confidence, WANTED_DETECTABLE)
    return ComparisonRow(key, a, b, estimate, verdict, detectable, needed)


def environment_differences(a: Run, b: Run) -> list[str]:
    """What differs between the two runs' machines, builds, data or settings, one line each."""
    lines = []
    if a.run_id == b.run_id and a.created == b.created:
        lines.append(f"A and B are the same run ({a.run_id}): every change below is zero by construction")
    for label, path in ENV_FACTS:
        left, right = fact(a.env, *path), fact(b.env, *path)
        if left != right:
            lines.append(f"{label} differs: A {left} vs B {right}")
    gpus_a, gpus_b = gpu_names(a), gpu_names(b)
    if gpus_a != gpus_b:
        lines.append(f"GPUs differ: A {gpus_a or 'none'} vs B {gpus_b or 'none'}")
    if a.dataset.name != b.dataset.name:
        lines.append(f"dataset differs: A {a.dataset.name} vs B {b.dataset.name}")
    for option in ("max_time", "epoch_repeats", "epochs", "train_loader", "train_runs"):
        left, right = getattr(a.options, option), getattr(b.options, option)
        if left != right:
            lines.append(f"option {option} differs: A {left} vs B {right}")
    for name, run in (("A", a), ("B", b)):
        if run.options.passes < 2 and any(
            case.ok and workload(case.key.workload).in_rounds for case in run.cases
        ):
            lines.append(
                f"run {name} timed its step cases in a single pass: their intervals cannot see drift "
                "between passes (run with --passes 3 or more for comparisons)"
            )
        if run.partial:
            lines.append(f"run {name} is partial ({len(run.cases)} of {run.planned_cases} cases)")
    return lines


def gpu_names(run: Run) -> list[str]:
    devices = fact(run.env, "cuda", "devices")
    return [str(fact(d, "name")) for d in devices] if isinstance(devices, list) else []
