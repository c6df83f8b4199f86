"""Result records and the run folder: versioned JSON, written atomically after every finished case.

A case keeps one record per pass (`PassRecord`): its own raw samples, how they were timed, its
memory and energy readings. Median, IQR, spread, samples/s and n are derived from those records
when shown (`CaseResult` properties), never stored beside them, so they cannot disagree.

These dataclasses are the one declaration of the results format (schema version 2): `bench.schema`
validates files against them with pydantic and generates `results.schema.json` from them. Each
record also checks its own invariants (`__post_init__`), so a record the harness builds wrongly
fails where it is built, and a file edited into nonsense fails where it is read.

`results.json` is rewritten through a temporary file and `os.replace` after each case, so a process
killed at any moment leaves the previous complete version, never half a file.
"""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import statistics
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

from bench.catalog import RUNS, WORKLOADS, workload
from bench.errors import UsageError
from bench.plan import CaseKey, Options
from bench.stats import Summary, block_medians, summarize

SCHEMA_VERSION = 2
RESULTS_FILE = "results.json"
PYTEST_BENCHMARK_FILE = "pytest-benchmark.json"
Status = Literal["ok", "oom", "error", "skipped", "invalid"]
FAILED_STATUSES = ("oom", "error")
MAX_SAMPLE_S = 1e7  # 115 days: a longer "duration" is a damaged file, not a measurement
_STRICT = {"allow_inf_nan": False, "extra": "forbid"}  # pydantic's reading of these records


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_seconds(values: list[float] | None, name: str) -> None:
    if values is not None:
        _require(all(0 <= v < MAX_SAMPLE_S for v in values), f"{name} must be durations in [0, 1e7) s")


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

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    def __post_init__(self) -> None:
        values = [v for v in asdict(self).values() if v is not None]
        _require(all(0 <= v < 2**63 for v in values), "memory figures must be bytes in [0, 2**63)")


@dataclass(frozen=True)
class EnergyRecord:
    """Energy counted by the device's own counter over a pass's timed work, and how long that work lasted."""

    joules: float
    seconds: float
    source: str

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    def __post_init__(self) -> None:
        _require(
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

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    @property
    def difference(self) -> float:
        if self.check == "accuracy":
            return abs(self.value - self.reference)
        return abs(self.value - self.reference) / abs(self.reference) if self.reference else math.inf

    def describe(self) -> str:
        if self.check == "accuracy":
            return (
                f"final test accuracy {self.value:.2%} vs {self.against}'s {self.reference:.2%} "
                f"(difference {self.difference * 100:.2f} points, allowed {self.tolerance * 100:.1f})"
            )
        return (
            f"loss after {self.steps} steps {self.value:.5g} vs {self.against}'s {self.reference:.5g} "
            f"(difference {self.difference:.2g}, allowed {self.tolerance:.2g})"
        )


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
    seed: int | None = None
    test_accuracy: list[float] | None = None
    mean_loss: list[float | None] | None = None
    eval_seconds: list[float] | None = None
    compile_s: float | None = None  # compiling or capturing, before the clock started
    recompiles: int | None = None  # graphs torch.compile built while the clock ran (should be 0)
    per_rank_s: list[list[float]] | None = None  # processes at once: each rank's seconds, unit by unit
    comm_s: float | None = None  # data-parallel: the gradient all-reduce alone, seconds per step
    memory: MemoryRecord | None = None
    energy: EnergyRecord | None = None
    wall_s: float | None = None

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    def __post_init__(self) -> None:
        _require(self.index >= 0, "a pass index is at least 0")
        _require(self.compile_s is None or 0 <= self.compile_s < MAX_SAMPLE_S, "compile_s is a duration")
        _require(self.recompiles is None or self.recompiles >= 0, "recompiles is a count")
        _require(len(self.samples_s) >= 1, "a pass holds at least one sample")
        _require(all(0 < v < MAX_SAMPLE_S for v in self.samples_s), "samples must be durations in (0, 1e7) s")
        _check_seconds(self.data_seconds, "data_seconds")
        _check_seconds(self.eval_seconds, "eval_seconds")
        _require(self.calls_per_round is None or self.calls_per_round >= 1, "calls_per_round is at least 1")
        _require(self.batches is None or self.batches >= 1, "batches is at least 1")
        for name in ("data_seconds", "test_accuracy", "mean_loss", "eval_seconds"):
            values = getattr(self, name)
            _require(values is None or len(values) == len(self.samples_s), f"{name} has one value per epoch")
        _require(
            self.test_accuracy is None or all(0 <= a <= 1 for a in self.test_accuracy),
            "test_accuracy values are fractions in [0, 1]",
        )

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)


@dataclass(frozen=True)
class CaseResult:
    """One case of the sweep: its identity, its status and one record per pass that measured it."""

    workload: str
    device: str
    batch_size: int
    loader: str | None = None
    mode: str = "eager"
    threads: int | None = None
    world_size: int = 1
    side_by_side: int = 1
    status: Status = "ok"
    error: str | None = None  # why the case is not ok
    samples_per_unit: int | None = None  # samples in one timed unit: a call (rounds) or an epoch
    passes: list[PassRecord] = field(default_factory=list)
    failed_passes: list[str] = field(default_factory=list)  # later passes that failed after one was ok
    flops_per_sample: int | None = None  # model FLOPs (bench.efficiency.COUNTING_RULE)
    ops_per_step: int | None = None  # ATen ops one step (or call) dispatches, counted once, untimed
    validations: list[Validation] = field(default_factory=list)
    backend: str | None = None  # processes at once: the torch.distributed backend (gloo, nccl)
    nnodes: int | None = None  # processes at once: the machines they ran on

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    def __post_init__(self) -> None:
        _require(self.workload in WORKLOADS, f"workload is one of {', '.join(WORKLOADS)}")
        _require(self.batch_size >= 1, "batch_size is at least 1")
        _require(
            self.world_size >= 1 and self.side_by_side >= 1, "world_size and side_by_side are at least 1"
        )
        _require(
            self.threads is None or self.threads >= 1, "threads is at least 1 (or null: torch's default)"
        )
        if self.status == "ok":
            _require(len(self.passes) >= 1, "an ok case has at least one pass record")
            _require(
                self.samples_per_unit is not None and self.samples_per_unit >= 1,
                "an ok case has samples_per_unit of at least 1",
            )
        else:
            _require(bool(self.error), f"a case with status {self.status!r} says why in 'error'")

    # --- identity and status ---

    @property
    def key(self) -> CaseKey:
        return CaseKey(
            self.workload,
            self.device,
            self.batch_size,
            self.loader,
            self.mode,
            self.threads,
            self.world_size,
            self.side_by_side,
        )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        """Attempted and broke (OOM, error): the run's exit status counts these."""
        return self.status in FAILED_STATUSES

    @classmethod
    def for_key(cls, key: CaseKey, **fields: Any) -> CaseResult:
        return cls(**asdict(key), **fields)

    @classmethod
    def failure(cls, key: CaseKey, status: Status, error: str) -> CaseResult:
        return cls.for_key(key, status=status, error=error)

    def with_pass(self, record: PassRecord) -> CaseResult:
        """This case after one more pass."""
        return replace(self, passes=[*self.passes, record])

    def with_failed_pass(self, status: str, error: str) -> CaseResult:
        return replace(self, failed_passes=[*self.failed_passes, f"{status}: {error}"])

    # --- derived from the pass records ---

    @cached_property
    def samples_s(self) -> list[float]:
        """Every sample of every pass, in the order they were taken."""
        return [sample for record in self.passes for sample in record.samples_s]

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
        if not check.passed and status == "ok":
            status, error = "invalid", f"it computes something else than {check.against}: {check.describe()}"
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
        if len(self.passes) >= 2:
            return [record.median_s for record in self.passes]
        if workload(self.workload).in_rounds:
            return block_medians(self.samples_s)
        return list(self.samples_s)

    # --- training runs ---

    @property
    def runs(self) -> list[PassRecord]:
        return self.passes if workload(self.workload).timing == RUNS else []

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

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Run:
    """A run: environment, dataset, options and the cases finished so far."""

    run_id: str
    created: str
    env: dict[str, Any]
    dataset: DatasetInfo
    options: Options
    cases: list[CaseResult] = field(default_factory=list)
    state: Literal["running", "complete", "interrupted"] = "running"
    planned_cases: int = 0
    finished: str | None = None
    plots: list[str] = field(default_factory=list)
    in_progress: CaseKey | None = (
        None  # the case being measured when the file was written (a crash's suspect)
    )
    schema_version: int = SCHEMA_VERSION

    __pydantic_config__: ClassVar[dict[str, Any]] = {"allow_inf_nan": False}

    @property
    def partial(self) -> bool:
        return self.state != "complete" or len(self.cases) < self.planned_cases

    def case(self, key: CaseKey) -> CaseResult | None:
        return next((case for case in self.cases if case.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"schema_version": data.pop("schema_version"), **data}


def new_run_id() -> str:
    return secrets.token_hex(3)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_run_folder(base: Path, run_id: str) -> Path:
    """`results/<date>-<host>-<short id>/`; the date is local, the id random."""
    host = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in platform.node() or "host")
    return base / f"{datetime.now().strftime('%Y-%m-%d')}-{host}-{run_id}"


def prepare_run_folder(folder: Path) -> Path:
    """Creates `folder` and proves it is writable before anything is measured."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise UsageError(
            f"cannot write results to {folder}: {error.strerror or error}", hint=_unwritable_hint(folder)
        ) from None
    if (folder / RESULTS_FILE).exists():
        raise UsageError(
            f"{folder} already holds a run ({RESULTS_FILE}); it would be overwritten",
            hint="give --out a new folder (or leave --out out for a fresh one under results/)",
        )
    return folder


def _unwritable_hint(folder: Path) -> str:
    """Says whose folder it is when ownership is the problem (the usual case in containers)."""
    hint = "choose a writable folder with --out, or fix its permissions"
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not hasattr(os, "getuid"):
        return hint
    owner = existing.stat()
    if owner.st_uid != os.getuid():
        hint = (
            f"{existing} belongs to uid {owner.st_uid}:{owner.st_gid} but this process runs as "
            f"{os.getuid()}:{os.getgid()}; {hint}"
        )
        if os.environ.get("BENCH_IMAGE"):
            hint += " (with Docker Compose: BENCH_UID=$(id -u) BENCH_GID=$(id -g) docker compose run ...)"
    return hint


def write_atomic(path: Path, text: str) -> None:
    """Writes `text` to `path` so that readers see the old file or the new one, never a mix."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _finite(value: Any) -> Any:
    """NaN and infinities (a diverging loss, say) become null: JSON has no other spelling for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def save_run(run: Run, folder: Path) -> Path:
    path = folder / RESULTS_FILE
    write_atomic(path, json.dumps(_finite(run.to_dict()), indent=1, allow_nan=False) + "\n")
    return path
