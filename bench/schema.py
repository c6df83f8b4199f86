"""Reading results files: find them, upgrade old versions, validate them against the record types.

The dataclasses of `bench.results` are the one declaration of the format. pydantic validates a
file against them (types, required fields, finite numbers, no unknown keys, and each record's own
invariants) and generates the JSON Schema shipped as `bench/results.schema.json`, so other tools can
validate the format too. Every problem becomes a ResultsFileError naming the field and what is
wrong with it, which the CLI prints with exit status 2: never a traceback.

Version 1 files (written before cases kept one record per pass) are upgraded on reading: their
pooled samples are split back into passes by the pass records they carried.
"""

from __future__ import annotations

import json
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

from bench.catalog import EPOCHS, ROUNDS, WORKLOAD_BY_NAME
from bench.errors import ResultsFileError
from bench.plan import Options
from bench.results import RESULTS_FILE, SCHEMA_VERSION, Run

SCHEMA_FILE = Path(__file__).with_name("results.schema.json")
SHOWN_PROBLEMS = 3
HINT = "give a run folder made by `bench run`, or the results.json inside it"


def resolve_results_path(target: str | os.PathLike[str]) -> Path:
    """A run folder or its results.json -> the results.json path (not yet read)."""
    path = Path(target)
    if path.is_dir():
        path = path / RESULTS_FILE
    return path


def load_run(target: str | os.PathLike[str]) -> Run:
    """Reads, upgrades and validates a run; a file that is not one raises ResultsFileError saying why."""
    path = resolve_results_path(target)
    if not path.exists():
        raise _missing(Path(target), path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ResultsFileError(f"{path} is not a results file: it is not text", hint=HINT) from None
    except json.JSONDecodeError as error:
        raise ResultsFileError(
            f"{path} is not a results file: invalid JSON at line {error.lineno}, column {error.colno} "
            f"({error.msg}); it may be truncated",
            hint=HINT,
        ) from None
    except OSError as error:
        raise ResultsFileError(f"cannot read {path}: {error.strerror or error}") from None
    return validate(data, origin=str(path))


def validate(data: Any, origin: str = "the results") -> Run:
    """A Run from parsed JSON, or a ResultsFileError naming the first problems and their fields."""
    if not isinstance(data, dict):
        raise ResultsFileError(f"{origin} is not a results file: the top level is a {type(data).__name__}")
    version = data.get("schema_version")
    if version == 1:
        data = upgrade_v1(data)
    elif version != SCHEMA_VERSION:
        raise ResultsFileError(
            f"{origin} has schema_version {version!r}; this bench reads versions 1 and {SCHEMA_VERSION}",
            hint="report it with the torch-bench release that wrote it" if isinstance(version, int) else HINT,
        )
    try:
        import pydantic
    except ImportError:  # a declared dependency; a bare GPU box running from PYTHONPATH may lack it
        print(f"warning: pydantic is not installed, so {origin} was not validated", file=sys.stderr)
        return _unvalidated(data)
    try:
        return _adapter().validate_python(data)
    except pydantic.ValidationError as error:
        problems = [_describe(problem) for problem in error.errors()]
        more = f" (and {len(problems) - SHOWN_PROBLEMS} more)" if len(problems) > SHOWN_PROBLEMS else ""
        raise ResultsFileError(
            f"{origin} is not a valid results file: {'; '.join(problems[:SHOWN_PROBLEMS])}{more}", hint=HINT
        ) from None


@cache
def _adapter() -> Any:
    import pydantic

    return pydantic.TypeAdapter(Run)


def _describe(problem: Any) -> str:
    location = ".".join(str(part) for part in problem.get("loc", ())) or "the top level"
    message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{location}: {message}"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of results.json (version 2), generated from the record types."""
    schema = dict(_adapter().json_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"torch-bench results.json, schema version {SCHEMA_VERSION}"
    return schema


def _missing(given: Path, path: Path) -> ResultsFileError:
    """No results.json where one was expected: say what is there, and suggest only real runs."""
    if given.is_dir():
        runs = _runs_under(given)
        problem = f"{given} holds no {RESULTS_FILE}"
        if runs:
            return ResultsFileError(
                f"{problem}: it holds run folders, not a run", hint=f"give one of them: {runs}"
            )
        return ResultsFileError(f"{problem}; it is not a run folder", hint=HINT)
    nearest = next((p for p in given.parents if p.is_dir()), None)
    runs = _runs_under(nearest) if nearest is not None else ""
    hint = f"run folders in {nearest}: {runs}" if runs else HINT
    return ResultsFileError(f"no results file at {given}: it does not exist", hint=hint)


def _runs_under(folder: Path, shown: int = 5) -> str:
    runs = sorted(str(p.parent) for p in folder.glob(f"*/{RESULTS_FILE}") if p.is_file())
    return ", ".join(runs[:shown]) + (", ..." if len(runs) > shown else "")


def _unvalidated(data: dict[str, Any]) -> Run:
    """Builds the records without validation (only where pydantic is missing)."""
    from bench.results import CaseResult, DatasetInfo, MemoryRecord, PassRecord

    def case(raw: dict[str, Any]) -> CaseResult:
        passes = [
            PassRecord(**{**p, "memory": MemoryRecord(**p["memory"]) if p.get("memory") else None})
            for p in raw.get("passes", [])
        ]
        return CaseResult(**{**raw, "passes": passes})

    options = dict(data["options"])
    for name, value in options.items():
        if isinstance(value, list):
            options[name] = tuple(value)
    return Run(
        **{
            **data,
            "dataset": DatasetInfo(**data["dataset"]),
            "options": Options(**options),
            "cases": [case(raw) for raw in data.get("cases", [])],
        }
    )


# --- version 1 -------------------------------------------------------------------------------------

V1_OPTION_NAMES = {
    "devices", "batch_sizes", "workloads", "loaders", "torchvision_batch_sizes", "train_loader", "epochs",
    "epoch_repeats", "target_accuracy", "max_time", "min_rounds", "passes", "quick",
}  # fmt: skip


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version 1 file as version 2: pooled samples split back into one record per pass.

    Version 1 kept the calibration (calls per round, timer) of the first pass only, so later passes
    get none; memory peaks were kept per case, so they go to the first pass. Anything malformed is
    passed on unchanged for validation to name.
    """
    upgraded = dict(data, schema_version=SCHEMA_VERSION)
    options = data.get("options")
    if isinstance(options, dict):
        upgraded["options"] = {k: v for k, v in options.items() if k in V1_OPTION_NAMES}
        upgraded["plots"] = options.get("plots", [])
    cases = data.get("cases")
    if isinstance(cases, list):
        upgraded["cases"] = [_upgrade_case(case) if isinstance(case, dict) else case for case in cases]
    return upgraded


V1_MEMORY = {
    "host_rss_start_bytes": "host_rss_start_bytes",
    "host_rss_peak_bytes": "host_rss_peak_bytes",
    "device_peak_allocated_bytes": "device_peak_allocated_bytes",
    "device_peak_reserved_bytes": "device_peak_reserved_bytes",
    "nvml_used_peak_bytes": "nvml_used_bytes",
}


def _upgrade_case(case: dict[str, Any]) -> dict[str, Any]:
    raw_details = case.get("details")
    details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
    new: dict[str, Any] = {
        k: case[k] for k in ("workload", "device", "batch_size", "loader", "status", "error") if k in case
    }
    failed = details.get("failed_passes", [])
    new["failed_passes"] = failed if isinstance(failed, list) else []
    if case.get("status") != "ok":
        return new
    new["samples_per_unit"] = case.get("samples_per_call")
    spec = WORKLOAD_BY_NAME.get(str(case.get("workload")))
    samples = case.get("samples_s")
    if spec is None or not isinstance(samples, list):
        new["passes"] = [{"index": 0, "samples_s": samples}]
        return new
    if spec.timing == ROUNDS:
        passes = _split_rounds(samples, details)
    elif spec.timing == EPOCHS:
        passes = _split_epochs(samples, details)
    else:
        passes = [_training_run(case, details)]
    if passes and all(
        isinstance(case.get(old), int) for old in ("host_rss_start_bytes", "host_rss_peak_bytes")
    ):
        passes[0]["memory"] = {new_name: case.get(old) for old, new_name in V1_MEMORY.items()}
    new["passes"] = passes
    return new


def _split_rounds(samples: list[Any], details: dict[str, Any]) -> list[dict[str, Any]]:
    indices, rounds = details.get("pass_index"), details.get("pass_rounds")
    calibration = {"calls_per_round": details.get("calls_per_round"), "timer": details.get("timer")}
    consistent = (
        isinstance(indices, list)
        and isinstance(rounds, list)
        and len(indices) == len(rounds)
        and all(isinstance(x, int) and x >= 0 for x in [*indices, *rounds])
        and sum(rounds) == len(samples)
    )
    if not consistent or not isinstance(indices, list) or not isinstance(rounds, list):
        return [{"index": 0, "samples_s": samples, **calibration}]
    passes, start = [], 0
    for position, (index, count) in enumerate(zip(indices, rounds, strict=True)):
        if count:
            passes.append({"index": index, "samples_s": samples[start : start + count], **(
                calibration if position == 0 else {})})  # fmt: skip
        start += count
    return passes


def _split_epochs(samples: list[Any], details: dict[str, Any]) -> list[dict[str, Any]]:
    indices, data = details.get("pass_index"), details.get("data_seconds")
    batches = details.get("batches_per_epoch")
    if not (isinstance(indices, list) and len(indices) == len(samples)):
        indices = [0] * len(samples)
    if not (isinstance(data, list) and len(data) == len(samples)):
        data = None
    passes: dict[Any, dict[str, Any]] = {}
    for position, (index, seconds) in enumerate(zip(indices, samples, strict=True)):
        record = passes.setdefault(index, {"index": index, "samples_s": [], "batches": batches})
        record["samples_s"].append(seconds)
        if data is not None:
            record.setdefault("data_seconds", []).append(data[position])
            record["data_timer"] = "host clock"
    return list(passes.values())


def _training_run(case: dict[str, Any], details: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": 0,
        "seed": 0,
        "samples_s": case.get("samples_s"),
        "test_accuracy": case.get("test_accuracy"),
        "mean_loss": details.get("mean_loss"),
        "eval_seconds": details.get("eval_seconds"),
        "data_seconds": details.get("data_seconds"),
        "data_timer": "host clock",
    }


if __name__ == "__main__":  # python -m bench.schema > bench/results.schema.json
    print(json.dumps(json_schema(), indent=1))
