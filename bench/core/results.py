"""A run's results: each case with its records, and the run that holds them (schema version 3).

These dataclasses (with the records of `bench.core.records`) are the one declaration of the results
format: `bench.core.schema` reads files into them (validated with pydantic where it is installed)
and generates `results.schema.json` from them. A case holds its identity whole (`CaseResult.key`);
the run indexes its cases by it. What the harness itself writes about a run (how it timed, the
measured peaks, the energy meters, the disturbance during the run, the processes, the install
check, the command line) has a typed section of its own; `env` holds the machine facts collected
by `bench.env`, which differ from machine to machine.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any, ClassVar, Literal

from bench.core.catalog import FAILED_STATUSES, PRECISIONS, WORKLOADS, Status, Timing, workload
from bench.core.keys import CaseKey
from bench.core.plan import Options
from bench.core.records import STRICT, PassRecord, Validation, require
from bench.core.stats import Summary, block_medians, summarize

SCHEMA_VERSION = 3


@dataclass(frozen=True)
class CaseResult:
    """One case of the sweep: its identity, its status and one record per pass that measured it."""

    key: CaseKey
    status: Status = Status.OK
    error: str | None = None  # why the case is not ok
    samples_per_unit: int | None = None  # samples in one timed unit: a call (rounds) or an epoch
    passes: list[PassRecord] = field(default_factory=list)
    failed_passes: list[str] = field(default_factory=list)  # later passes that failed after one was ok
    flops_per_sample: int | None = None  # model FLOPs (bench.measure.efficiency.COUNTING_RULE)
    ops_per_step: int | None = None  # ATen ops one step (or call) dispatches, counted once, untimed
    kernels_per_step: int | None = None  # on a GPU: kernels one step (or call) launches, by the profiler
    parameters: int | None = None  # the model's parameters (elements), counted once, untimed
    validations: list[Validation] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)  # --profile: its trace and op table, in the run folder
    backend: str | None = None  # processes at once: the torch.distributed backend (gloo, nccl)
    nnodes: int | None = None  # processes at once: the machines they ran on

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))  # "ok" read from a file is Status.OK
        require(self.key.workload in WORKLOADS, f"workload is one of {', '.join(WORKLOADS)}")
        if self.status == Status.OK:
            require(len(self.passes) >= 1, "an ok case has at least one pass record")
            require(
                self.samples_per_unit is not None and self.samples_per_unit >= 1,
                "an ok case has samples_per_unit of at least 1",
            )
        else:
            require(bool(self.error), f"a case with status {self.status!r} says why in 'error'")
        require(self.flops_per_sample is None or self.flops_per_sample > 0, "flops_per_sample is positive")
        require(self.ops_per_step is None or self.ops_per_step >= 0, "ops_per_step is not negative")
        require(self.nnodes is None or self.nnodes >= 1, "nnodes is at least 1")

    # --- status ---

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def failed(self) -> bool:
        """Attempted and broke (OOM, error): the run's exit status counts these."""
        return self.status in FAILED_STATUSES

    @classmethod
    def failure(cls, key: CaseKey, status: Status, error: str) -> CaseResult:
        return cls(key, status=status, error=error)

    def with_pass(self, record: PassRecord) -> CaseResult:
        """This case after one more pass."""
        return replace(self, passes=[*self.passes, record])

    def with_failed_pass(self, status: Status, error: str) -> CaseResult:
        return replace(self, failed_passes=[*self.failed_passes, f"{status}: {error}"])

    # --- derived from the pass records ---

    @cached_property
    def clean_passes(self) -> list[PassRecord]:
        """The passes whose threads got their CPUs (not `contended`)."""
        return [record for record in self.passes if not record.contended]

    @property
    def contended(self) -> bool:
        """The figure rests on contended passes: no pass of the case had the CPUs to itself."""
        return bool(self.passes) and not self.clean_passes

    @property
    def device_marks(self) -> list[str]:
        """`throttled` / `shared`: the GPU slowed its clocks, or other processes used it, during a pass
        the case's figure rests on (NVML, read around each pass)."""
        health = [r.device_health for r in (self.clean_passes or self.passes) if r.device_health is not None]
        return [name for name in ("throttled", "shared") if any(getattr(h, name) for h in health)]

    @cached_property
    def samples_s(self) -> list[float]:
        """The samples the case's figures rest on, in the order they were taken: those of the clean
        passes where there are any, else of every pass (and the case is `contended`)."""
        return [sample for record in (self.clean_passes or self.passes) for sample in record.samples_s]

    @cached_property
    def summary(self) -> Summary | None:
        return summarize(self.samples_s) if self.samples_s else None

    @property
    def median_s(self) -> float | None:
        return self.summary.median if self.summary else None

    @property
    def iqr_s(self) -> float | None:
        return self.summary.iqr if self.summary else None

    @property
    def spread(self) -> float | None:
        return self.summary.spread if self.summary else None

    @property
    def n(self) -> int:
        return self.summary.n if self.summary else 0

    @property
    def noisy(self) -> bool:
        return self.summary is not None and self.summary.noisy

    @property
    def samples_per_s(self) -> float | None:
        """Throughput of an ok case; None otherwise (a failed or invalid case is never a number here)."""
        return self.measured_rate if self.ok else None

    @property
    def measured_rate(self) -> float | None:
        """Samples/s of whatever was measured, whatever the status (an invalid case shows its figures)."""
        median = self.median_s
        if not median or self.samples_per_unit is None:
            return None
        return self.samples_per_unit / median

    @property
    def compile_s(self) -> float | None:
        """Compile (or capture) time of the first pass that compiled: what a user waits for once."""
        return next((r.compile_s for r in self.passes if r.compile_s), None)

    @property
    def recompiles(self) -> int:
        return sum(r.recompiles or 0 for r in self.passes)

    def with_validation(self, check: Validation) -> CaseResult:
        """This case with one more validation; a failed one makes an ok case `invalid`, saying why."""
        status, error = self.status, self.error
        if not check.passed and status is Status.OK:
            status, error = (
                Status.INVALID,
                f"it computes something else than {check.against}: {check.describe()}",
            )
        return replace(self, validations=[*self.validations, check], status=status, error=error)

    def peak(self, name: str) -> int | None:
        """The largest of a memory figure over the passes (None where no pass recorded it)."""
        values = [getattr(r.memory, name) for r in self.passes if r.memory is not None]
        present = [v for v in values if v is not None]
        return max(present) if present else None

    @property
    def own_device_peak_bytes(self) -> int | None:
        """Peak allocated above what the allocator held when the pass started, largest over the passes."""
        own = [
            r.memory.device_peak_allocated_bytes - r.memory.device_baseline_allocated_bytes
            for r in self.passes
            if r.memory is not None
            and r.memory.device_peak_allocated_bytes is not None
            and r.memory.device_baseline_allocated_bytes is not None
        ]
        return max(own) if own else None

    def independent_samples(self) -> list[float]:
        """Seconds in units whose noise is independent enough for a test between runs.

        One value per pass (the median of its samples) when there are several passes: passes are
        spread over the run, training runs have their own seeds. A single pass of rounds falls back
        to the medians of five stretches of its rounds; a single pass of epochs to its epochs.
        """
        records = self.clean_passes or self.passes
        if len(records) >= 2:
            return [record.median_s for record in records]
        if workload(self.key.workload).in_rounds:
            return block_medians(self.samples_s)
        return list(self.samples_s)

    # --- training runs ---

    @property
    def runs(self) -> list[PassRecord]:
        return self.passes if workload(self.key.workload).timing is Timing.RUNS else []

    @property
    def final_accuracy(self) -> float | None:
        """Median over the training runs of the test accuracy after the last epoch."""
        finals = [r.test_accuracy[-1] for r in self.runs if r.test_accuracy]
        return statistics.median(finals) if finals else None


@dataclass(frozen=True)
class DatasetInfo:
    """What the results say about the data: which set, from where, and whether it is real."""

    name: str
    requested: str
    source: str
    files: dict[str, str]
    train_samples: int
    test_samples: int
    synthetic: bool
    note: str | None = None
    download_error: str | None = field(default=None, repr=False)

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT


# --- what the harness writes about a run ----------------------------------------------------------


@dataclass(frozen=True)
class TimingPolicy:
    """How this run timed its work: the garbage-collection policy, and per device what one read of its
    clock costs and the shortest round that keeps that cost below 1% of a round."""

    gc: str
    clock_overhead_s: dict[str, float]
    min_round_s: dict[str, float]

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT


@dataclass(frozen=True)
class Peaks:
    """A device's own limits, measured in this run: matmul FLOP/s per precision (and the side of the
    square matmul that reached it), the per-op floor (seconds of the smallest op, host-timed) and, on
    a GPU, the per-kernel floor (the device's own, from a replayed graph of tiny kernels)."""

    op_floor_s: float | None = None
    kernel_floor_s: float | None = None
    float32: float | None = None
    float32_matmul_side: int | None = None
    bfloat16: float | None = None
    bfloat16_matmul_side: int | None = None
    tfloat32: float | None = None
    tfloat32_matmul_side: int | None = None

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT

    def __post_init__(self) -> None:
        figures = [self.op_floor_s, self.kernel_floor_s, *(getattr(self, name) for name in PRECISIONS)]
        require(all(v is None or v > 0 for v in figures), "peaks and the per-op floor are positive")

    def flops(self, precision: str) -> float | None:
        return getattr(self, precision) if precision in PRECISIONS else None

    def side(self, precision: str) -> int | None:
        return getattr(self, f"{precision}_matmul_side") if precision in PRECISIONS else None

    def best_of(self, other: Peaks) -> Peaks:
        """Two measurements of a device's limits (a run's start and end) as one: the higher peak of each
        precision (with its matmul's side), the lower per-op floor. A shared machine's speed drifts;
        its limits are what it did at its best."""
        best = asdict(self)
        for name in PRECISIONS:
            theirs = other.flops(name)
            if theirs is not None and theirs > (self.flops(name) or 0):
                best[name], best[f"{name}_matmul_side"] = theirs, other.side(name)
        for floor in ("op_floor_s", "kernel_floor_s"):
            known = [f for f in (getattr(self, floor), getattr(other, floor)) if f is not None]
            best[floor] = min(known) if known else None
        return Peaks(**best)


@dataclass(frozen=True)
class MeterFacts:
    """A device's energy meter: its source, or why there is none."""

    available: bool
    source: str | None = None
    reason: str | None = None

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT


@dataclass(frozen=True)
class Disturbance:
    """What happened on the machine during the run: the hypervisor's share (steal), the load at the end."""

    steal_percent: float | None = None
    loadavg_end: list[float] | None = None

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT


@dataclass(frozen=True)
class ProcessFacts:
    """A run whose ranks torchrun started: how many, on how many machines, talking how."""

    world_size: int
    nnodes: int
    backend: str
    threads_per_process: int | None = None
    link_bus_bandwidth: float | None = (
        None  # bytes/s: a large all-reduce between the ranks (nccl-tests' busbw)
    )

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT


@dataclass(frozen=True)
class CheckLine:
    """One line of the install check: its verdict (PASS, FAIL, WARN, INFO, SKIP) and what to do."""

    name: str
    verdict: str
    detail: str
    hint: str = ""

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT


RunState = Literal["running", "complete", "interrupted", "failed"]


@dataclass
class Run:
    """A run: environment, dataset, options, what the harness wrote about it, and the cases so far."""

    run_id: str
    created: str
    env: dict[str, Any]  # the machine facts bench.env collected
    dataset: DatasetInfo
    options: Options
    cases: list[CaseResult] = field(default_factory=list)
    state: RunState = "running"  # "running" in a file read later: the process died without a word
    stopped_by: str | None = None  # the signal that interrupted it ("SIGINT", "SIGTERM", "SIGHUP")
    planned_cases: int = 0
    finished: str | None = None
    plots: list[str] = field(default_factory=list)
    in_progress: CaseKey | None = (
        None  # the case being measured when the file was written (a crash's suspect)
    )
    command_line: str | None = None
    timing: TimingPolicy | None = None
    peaks: dict[str, Peaks] = field(default_factory=dict)  # by plan.peak_key: per device (and CPU threads)
    meters: dict[str, MeterFacts] = field(default_factory=dict)  # per device
    during_run: Disturbance | None = None
    processes: ProcessFacts | None = None
    check: list[CheckLine] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    __pydantic_config__: ClassVar[dict[str, Any]] = STRICT

    def __post_init__(self) -> None:
        self._index = {case.key: position for position, case in enumerate(self.cases)}

    @property
    def partial(self) -> bool:  # planned cases are missing (a run stopped after its last case is not)
        return len(self.cases) < self.planned_cases

    def interrupted_by(self, signal_name: str, keep_suspect: bool = False) -> None:
        """Stopped on a signal; a rank keeps its suspect (torchrun's SIGTERM may follow a rank's failure)."""
        self.state, self.stopped_by = "interrupted", signal_name
        self.in_progress = self.in_progress if keep_suspect else None

    def case(self, key: CaseKey) -> CaseResult | None:
        position = self._index.get(key)
        if position is None or position >= len(self.cases) or self.cases[position].key != key:
            self._index = {case.key: index for index, case in enumerate(self.cases)}  # the list was edited
            position = self._index.get(key)
        return None if position is None else self.cases[position]

    def store(self, case: CaseResult) -> None:
        """Adds a case, or replaces the one of the same key."""
        position = self._index.get(case.key) if self.case(case.key) is not None else None
        if position is None:
            self._index[case.key] = len(self.cases)
            self.cases.append(case)
        else:
            self.cases[position] = case

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"schema_version": data.pop("schema_version"), **data}
