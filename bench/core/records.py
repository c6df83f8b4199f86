"""The records of one pass of a case: its raw samples, memory, energy and the checks of a mode.

A case keeps one record per pass (`PassRecord`): its own raw samples, how they were timed, its
memory and energy readings. Median, IQR, spread, samples/s and n are derived from those records
when shown, never stored beside them, so they cannot disagree. Each record checks its own
invariants (`__post_init__`), so a record the harness builds wrongly fails where it is built, and a
file edited into nonsense fails where it is read.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

MAX_SAMPLE_S = 1e7  # 115 days: a longer "duration" is a damaged file, not a measurement
STRICT: dict[str, Any] = {"allow_inf_nan": False, "extra": "forbid"}  # pydantic's reading of these records


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_seconds(values: list[float] | None, name: str) -> None:
    if values is not None:
        require(all(0 <= v < MAX_SAMPLE_S for v in values), f"{name} must be durations in [0, 1e7) s")


@dataclass(frozen=True)
class MemoryRecord:
    """Bytes measured over one pass of a case; None where the machine cannot tell.

    `device_baseline_allocated_bytes` is what the allocator held when the pass started (cuBLAS
    workspaces, other cases' leftovers): the case's own peak is the peak above it.
    """

    host_rss_start_bytes: int
    host_rss_peak_bytes: int
    device_baseline_allocated_bytes: int | None = None
    device_peak_allocated_bytes: int | None = None
    device_peak_reserved_bytes: int | None = None
    nvml_used_bytes: int | None = None

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT

    def __post_init__(self) -> None:
        values = [v for v in asdict(self).values() if v is not None]
        require(all(0 <= v < 2**63 for v in values), "memory figures must be bytes in [0, 2**63)")


@dataclass(frozen=True)
class EnergyRecord:
    """Energy counted by the device's own counter over a pass's timed work, and how long that work lasted."""

    joules: float
    seconds: float
    source: str

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT

    def __post_init__(self) -> None:
        require(
            0 <= self.joules < 1e12 and 0 < self.seconds < MAX_SAMPLE_S,
            "energy needs joules >= 0 and seconds > 0",
        )


@dataclass(frozen=True)
class Validation:
    """A check that a mode computes what eager computes: its figure, eager's, and the tolerance.

    `check` is `loss` (mean loss after the validation steps, relative difference) or `accuracy`
    (final test accuracy of the training runs, absolute difference in fractions).
    """

    check: Literal["loss", "accuracy"]
    value: float
    reference: float
    tolerance: float
    passed: bool
    steps: int | None = None
    against: str = "eager"  # what the reference figure is: eager, or one process at the global batch
    scale: float | None = None  # loss: what the difference is relative to (None: the reference; else
    # eager's first loss, for a model trained over and over on one synthetic batch)

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT

    @property
    def difference(self) -> float:
        if self.check == "accuracy":
            return abs(self.value - self.reference)
        scale = abs(self.scale if self.scale is not None else self.reference)
        return abs(self.value - self.reference) / scale if scale else math.inf

    def describe(self) -> str:
        if self.check == "accuracy":
            return (
                f"final test accuracy {self.value:.2%} vs {self.against}'s {self.reference:.2%} "
                f"(difference {self.difference * 100:.2f} points, allowed {self.tolerance * 100:.1f})"
            )
        relative = "" if self.scale is None else f" of its first loss {self.scale:.5g}"
        return (
            f"loss after {self.steps} steps {self.value:.5g} vs {self.against}'s {self.reference:.5g} "
            f"(difference {self.difference:.2g}{relative}, allowed {self.tolerance:.2g})"
        )


# A pass is `contended` when its threads waited for a CPU this share of their time: quiet passes
# here wait about 1% (per running thread), passes beside one CPU hog 40-70%; 10% leaves a wide
# margin on both sides. The fallback (involuntary context switches) flags more than 50 a second
# per thread: a thread the kernel keeps preempting for others (a quiet one sees a handful).
CONTENDED_WAIT_SHARE = 0.10
CONTENDED_SWITCHES_PER_S = 50.0
CONTENDED_STEAL_SHARE = 0.10  # of the VM's CPU time given to a neighbour by the hypervisor
STEAL_MIN_S = 0.05  # /proc/stat counts in 10 ms ticks: less is below its resolution, not evidence
# A wait is contention only when other processes (not this one's own DataLoader workers) used this
# share of a CPU on the process's CPUs over the pass: a CPU hog holds 0.6-1.0 of one beside the
# harness, the quiet VM's background (shell, logging, the agent) under 0.1.
OTHERS_MIN_CPUS = 0.2


@dataclass(frozen=True)
class ContentionRecord:
    """How much a pass's own threads waited for a CPU while it was timed (raw readings), and by which
    source: `schedstat` (run-queue wait per thread) or `ctx_switches` (involuntary switches)."""

    source: Literal["schedstat", "ctx_switches"]
    wall_s: float
    threads: int  # threads that ran during the pass
    wait_s: float | None = None  # schedstat: run-queue wait summed over those threads
    involuntary_switches: int | None = None  # ctx_switches
    steal_s: float | None = None  # CPU time the hypervisor gave away over the pass, all CPUs
    cpus: int | None = None
    others_cpu_s: float | None = None  # CPU time other processes used on this one's CPUs over the pass
    cpu_mhz: float | None = None  # the slowest usable CPU's clock, the lower of before and after the pass
    cpu_max_mhz: float | None = None  # the CPUs' rated maximum, where the platform says

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT

    def __post_init__(self) -> None:
        require(
            0 < self.wall_s < MAX_SAMPLE_S and self.threads >= 1, "contention needs wall_s > 0, threads >= 1"
        )
        figures = [self.wait_s, self.involuntary_switches, self.steal_s, self.others_cpu_s, self.cpu_mhz,
                   self.cpu_max_mhz]  # fmt: skip
        require(all(v is None or v >= 0 for v in figures), "waits, switches and steal are not negative")

    @property
    def wait_share(self) -> float | None:
        """Run-queue wait per running thread, as a share of the pass's wall time."""
        return self.wait_s / (self.wall_s * self.threads) if self.wait_s is not None else None

    @property
    def steal_share(self) -> float | None:
        return self.steal_s / (self.wall_s * self.cpus) if self.steal_s is not None and self.cpus else None

    @property
    def others_cpus(self) -> float | None:
        """How many CPUs' worth other processes used on this process's CPUs over the pass."""
        return self.others_cpu_s / self.wall_s if self.others_cpu_s is not None else None

    @property
    def self_inflicted(self) -> bool:
        """The threads waited, but only for this process's own children (its DataLoader workers)."""
        others = self.others_cpus
        return others is not None and others < OTHERS_MIN_CPUS

    @property
    def contended(self) -> bool:
        wait, steal, switches = self.wait_share, self.steal_share, self.switches_per_s
        waited = (wait is not None and wait > CONTENDED_WAIT_SHARE) or (
            switches is not None and switches > CONTENDED_SWITCHES_PER_S
        )
        return (waited and not self.self_inflicted) or (
            steal is not None and steal > CONTENDED_STEAL_SHARE and (self.steal_s or 0) >= STEAL_MIN_S
        )

    @property
    def switches_per_s(self) -> float | None:
        """Involuntary context switches per running thread and second (the fallback source)."""
        if self.involuntary_switches is None:
            return None
        return self.involuntary_switches / (self.wall_s * self.threads)


# A GPU pass is `throttled` when NVML gave a reason of this kind for lowering its clocks, or its SM
# clock ran below this share of its maximum while it was busy; `shared` when other processes computed
# on it. Idle, sync boost and application clock settings are not throttling.
THROTTLING_REASONS = frozenset(
    {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)
THROTTLED_CLOCK_SHARE = 0.8


@dataclass(frozen=True)
class DeviceHealthRecord:
    """A GPU's state read by NVML right before and right after a pass was timed (never inside it):
    the clock-event reasons seen, the lowest SM clock against its maximum, the hottest temperature,
    the highest power against the enforced limit, and the most other processes computing on it."""

    readings: int
    throttle_reasons: list[str]
    sm_clock_share: float | None = None  # lowest SM clock over its maximum, when not idle
    temperature_c: float | None = None
    power_share: float | None = None  # highest power over the enforced limit
    other_processes: int | None = None

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT

    def __post_init__(self) -> None:
        require(self.readings >= 1, "device health needs a reading")
        shares = [self.sm_clock_share, self.power_share]
        require(all(v is None or 0 <= v < 100 for v in shares), "clock and power shares are not negative")
        require(self.other_processes is None or self.other_processes >= 0, "other processes are not negative")

    @property
    def throttled(self) -> bool:
        slow = self.sm_clock_share is not None and self.sm_clock_share < THROTTLED_CLOCK_SHARE
        return bool(THROTTLING_REASONS.intersection(self.throttle_reasons)) or slow

    @property
    def shared(self) -> bool:
        return bool(self.other_processes)


@dataclass(frozen=True)
class PassRecord:
    """What one pass of a case measured. `samples_s` are raw seconds: per call (rounds) or per epoch.

    Rounds: `calls_per_round` and `timer` as pytest-benchmark calibrated them in this pass, and the
    shortest round it was asked for. Epochs and training runs: per epoch, the seconds spent waiting
    for data and how they were timed. Training runs: the seed and the test accuracy after each epoch.
    """

    index: int  # the pass (rounds, epochs) or the training run
    samples_s: list[float]
    calls_per_round: int | None = None
    timer: str | None = None
    min_round_s: float | None = None
    data_seconds: list[float] | None = None
    data_timer: str | None = None  # "host clock" or "cuda events"
    batches: int | None = None  # per epoch
    first_batch_s: list[float] | None = None  # per epoch: from its start to its first batch
    seed: int | None = None
    test_accuracy: list[float] | None = None
    mean_loss: list[float | None] | None = None
    eval_seconds: list[float] | None = None
    compile_s: float | None = None  # compiling or capturing, before the clock started
    recompiles: int | None = None  # graphs torch.compile built while the clock ran (should be 0)
    per_rank_s: list[list[float]] | None = None  # processes at once: each rank's seconds, unit by unit
    comm_s: float | None = None  # data-parallel: the gradient all-reduce alone, seconds per step
    comm_bytes: int | None = None  # data-parallel: the bytes that all-reduce moves (the gradients' size)
    memory: MemoryRecord | None = None
    energy: EnergyRecord | None = None
    wall_s: float | None = None
    contention: ContentionRecord | None = None  # while the pass was timed (None: not measured)
    device_health: DeviceHealthRecord | None = None  # a GPU's state around the pass (None: not a GPU)

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT

    @property
    def contended(self) -> bool:
        return self.contention is not None and self.contention.contended

    def __post_init__(self) -> None:
        require(self.index >= 0, "a pass index is at least 0")
        require(self.compile_s is None or 0 <= self.compile_s < MAX_SAMPLE_S, "compile_s is a duration")
        require(self.recompiles is None or self.recompiles >= 0, "recompiles is a count")
        require(len(self.samples_s) >= 1, "a pass holds at least one sample")
        require(all(0 < v < MAX_SAMPLE_S for v in self.samples_s), "samples must be durations in (0, 1e7) s")
        _check_seconds(self.data_seconds, "data_seconds")
        _check_seconds(self.eval_seconds, "eval_seconds")
        _check_seconds(self.first_batch_s, "first_batch_s")
        require(self.calls_per_round is None or self.calls_per_round >= 1, "calls_per_round is at least 1")
        require(self.batches is None or self.batches >= 1, "batches is at least 1")
        require(self.comm_s is None or 0 < self.comm_s < MAX_SAMPLE_S, "comm_s is a duration")
        require(self.comm_bytes is None or self.comm_bytes >= 1, "comm_bytes is at least 1")
        for name in ("data_seconds", "test_accuracy", "mean_loss", "eval_seconds", "first_batch_s"):
            values = getattr(self, name)
            require(values is None or len(values) == len(self.samples_s), f"{name} has one value per epoch")
        require(
            self.test_accuracy is None or all(0 <= a <= 1 for a in self.test_accuracy),
            "test_accuracy values are fractions in [0, 1]",
        )

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)
