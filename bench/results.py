"""Result records and the run folder: versioned JSON, written atomically after every finished case.

A run folder holds `results.json` (schema below), the raw pytest-benchmark JSON, `results.csv` and
`summary.md`. `results.json` is rewritten through a temporary file and `os.replace` after each
case, so a process killed at any moment leaves the previous complete version, never half a file.

Raw samples are stored in seconds and bytes; speeds, units and statistics are derived when shown.
"""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.catalog import STEP_WORKLOADS
from bench.errors import ResultsFileError, UsageError
from bench.stats import NOISY_SPREAD, Summary, block_medians, summarize

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
PYTEST_BENCHMARK_FILE = "pytest-benchmark.json"
STATUSES = ("ok", "oom", "error")


@dataclass(frozen=True)
class CaseKey:
    """What identifies a case across runs: the cells of the tables and of `compare`."""

    workload: str
    device: str
    batch_size: int
    loader: str | None = None

    def label(self) -> str:
        loader = f" [{self.loader}]" if self.loader else ""
        return f"{self.workload}{loader} · {self.device} · batch {self.batch_size}"


@dataclass(frozen=True)
class CaseResult:
    """One measured case. `samples_s` are raw seconds: per call (step workloads) or per epoch."""

    workload: str
    device: str
    batch_size: int
    loader: str | None
    status: str
    error: str | None = None
    samples_per_s: float | None = None
    median_s: float | None = None
    iqr_s: float | None = None
    spread: float | None = None
    n: int = 0
    samples_s: list[float] = field(default_factory=list)
    samples_per_call: int | None = None
    pass_medians: list[float] | None = None
    host_rss_start_bytes: int | None = None
    host_rss_peak_bytes: int | None = None
    device_peak_allocated_bytes: int | None = None
    device_peak_reserved_bytes: int | None = None
    nvml_used_peak_bytes: int | None = None
    test_accuracy: list[float] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    wall_s: float | None = None

    @property
    def key(self) -> CaseKey:
        return CaseKey(self.workload, self.device, self.batch_size, self.loader)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def noisy(self) -> bool:
        """Spread (IQR/median) above the threshold the tables flag."""
        return self.spread is not None and self.spread > NOISY_SPREAD

    @property
    def final_accuracy(self) -> float | None:
        return self.test_accuracy[-1] if self.test_accuracy else None

    def summary(self) -> Summary | None:
        return summarize(self.samples_s) if self.samples_s else None

    def independent_samples(self) -> list[float]:
        """Seconds in units whose noise is independent enough for a test between runs.

        Step cases: one median per pass (passes are spread over the run), or, measured in a single
        pass, medians of five stretches of its rounds. Epoch and train cases: one value per epoch.
        """
        if self.workload not in STEP_WORKLOADS:
            return list(self.samples_s)
        if self.pass_medians and len(self.pass_medians) >= 2:
            return list(self.pass_medians)
        return block_medians(self.samples_s)

    def merged_with(self, later: CaseResult) -> CaseResult:
        """This case after another pass: samples pooled, pass medians appended, memory peaks kept."""
        if not later.ok:
            failures = [*self.details.get("failed_passes", []), f"{later.status}: {later.error}"]
            return replace(self, details={**self.details, "failed_passes": failures})
        if not self.ok:
            return self  # the earlier failure stands
        samples = self.samples_s + later.samples_s
        summary = summarize(samples)
        peaks: dict[str, Any] = {}
        for name in (
            "host_rss_peak_bytes",
            "device_peak_allocated_bytes",
            "device_peak_reserved_bytes",
            "nvml_used_peak_bytes",
        ):
            values = [v for v in (getattr(self, name), getattr(later, name)) if v is not None]
            peaks[name] = max(values) if values else None
        details = dict(self.details)
        for name, value in later.details.items():  # per-sample lists grow, counts add up
            if isinstance(value, list) and isinstance(details.get(name), list):
                details[name] = details[name] + value
            elif name == "rounds":
                details[name] = details.get(name, 0) + value
        return replace(
            self,
            samples_s=samples,
            median_s=summary.median,
            iqr_s=summary.iqr,
            spread=summary.spread,
            n=summary.n,
            samples_per_s=(self.samples_per_call or 1) / summary.median if summary.median > 0 else None,
            pass_medians=[*(self.pass_medians or []), *(later.pass_medians or [])],
            details=details,
            wall_s=round((self.wall_s or 0) + (later.wall_s or 0), 3),
            **peaks,
        )

    @classmethod
    def measured(
        cls, key: CaseKey, samples_s: list[float], samples_per_call: int, memory: Any = None, **extra: Any
    ) -> CaseResult:
        """An `ok` case from raw samples: median, IQR, spread and throughput derived here, once."""
        summary = summarize(samples_s)
        return cls(
            **asdict(key),
            status="ok",
            samples_per_s=samples_per_call / summary.median if summary.median > 0 else None,
            median_s=summary.median,
            iqr_s=summary.iqr,
            spread=summary.spread,
            n=summary.n,
            samples_s=list(samples_s),
            samples_per_call=samples_per_call,
            **(asdict(memory) if memory is not None else {}),
            **extra,
        )

    @classmethod
    def failed(cls, key: CaseKey, status: str, error: str, **extra: Any) -> CaseResult:
        return cls(**asdict(key), status=status, error=error, **extra)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class Run:
    """A run: environment, dataset, options and the cases finished so far."""

    run_id: str
    created: str
    env: dict[str, Any]
    dataset: dict[str, Any]
    options: dict[str, Any]
    cases: list[CaseResult] = field(default_factory=list)
    state: str = "running"  # running | complete | interrupted
    planned_cases: int = 0
    finished: str | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def partial(self) -> bool:
        return self.state != "complete" or len(self.cases) < self.planned_cases

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cases"] = [asdict(case) for case in self.cases]
        return {"schema_version": data.pop("schema_version"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        names = {f.name for f in fields(cls)} - {"cases"}
        run = cls(**{key: value for key, value in data.items() if key in names})
        run.cases = [CaseResult.from_dict(case) for case in data.get("cases", [])]
        return run


def new_run_id() -> str:
    return secrets.token_hex(3)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_run_folder(base: Path, run_id: str) -> Path:
    """`results/<date>-<host>-<short id>/` as the issue asks; the date is local, the id random."""
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


def resolve_results_path(target: str | os.PathLike[str]) -> Path:
    """A run folder or its results.json -> the results.json path (not yet read)."""
    path = Path(target)
    if path.is_dir():
        path = path / RESULTS_FILE
    return path


def load_run(target: str | os.PathLike[str]) -> Run:
    """Reads and validates a run; a file that is not one raises ResultsFileError saying why."""
    path = resolve_results_path(target)
    hint = "give a run folder made by `bench run`, or the results.json inside it"
    if not path.exists():
        runs = (
            sorted(p.parent.name for p in path.parent.glob(f"*/{RESULTS_FILE}"))
            if path.parent.is_dir()
            else []
        )
        if runs:
            shown = ", ".join(runs[:5]) + (", ..." if len(runs) > 5 else "")
            hint = f"{path.parent} holds run folders, not a run: give one of them ({shown})"
        raise ResultsFileError(f"no results file at {path}", hint=hint)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ResultsFileError(f"{path} is not a results file: it is not text", hint=hint) from None
    except json.JSONDecodeError as error:
        raise ResultsFileError(
            f"{path} is not a results file: invalid JSON at line {error.lineno}, column {error.colno} "
            f"({error.msg}); it may be truncated",
            hint=hint,
        ) from None
    except OSError as error:
        raise ResultsFileError(f"cannot read {path}: {error.strerror or error}") from None
    problems = _validate(data)
    if problems:
        raise ResultsFileError(f"{path} is not a valid results file: {'; '.join(problems[:3])}", hint=hint)
    return Run.from_dict(data)


def _validate(data: Any) -> list[str]:
    if not isinstance(data, dict):
        return [f"the top level is a {type(data).__name__}, not an object"]
    version = data.get("schema_version")
    if version is None:
        return ["no schema_version"]
    if version != SCHEMA_VERSION:
        return [f"schema_version {version!r}; this bench reads version {SCHEMA_VERSION}"]
    problems = [
        f"missing {key!r}" for key in ("run_id", "env", "dataset", "options", "cases") if key not in data
    ]
    if problems:
        return problems
    if not isinstance(data["cases"], list):
        return ["'cases' is not a list"]
    required = ("workload", "device", "batch_size", "status")
    for index, case in enumerate(data["cases"]):
        if not isinstance(case, dict):
            problems.append(f"case {index} is not an object")
            continue
        missing = [key for key in required if key not in case]
        if missing:
            problems.append(f"case {index} lacks {', '.join(missing)}")
        elif case["status"] not in STATUSES:
            problems.append(f"case {index} has unknown status {case['status']!r}")
    return problems
