"""Reading results files: find them, upgrade old versions, build the records, validate them.

The dataclasses of `bench.core.results` and `bench.core.records` are the one declaration of the
format. One loading path builds them from parsed JSON: with pydantic (a declared dependency), which
checks types, required fields, finite numbers and unknown keys, and generates the JSON Schema
shipped as `results.schema.json`; without it (a bare GPU box running from PYTHONPATH), a small
builder that follows the same type hints. Either way every record runs its own invariants, and
every problem becomes a ResultsFileError naming the field, which the CLI prints with exit status 2:
never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import sys
import types
import typing
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

from bench.core.envvars import env_int
from bench.core.errors import ResultsFileError
from bench.core.results import SCHEMA_VERSION, Run
from bench.core.store import RESULTS_FILE
from bench.core.upgrade import upgrade

SCHEMA_FILE = Path(__file__).with_name("results.schema.json")
SHOWN_PROBLEMS = 3
HINT = "give a run folder made by `bench run`, or the results.json inside it"
READABLE_VERSIONS = (1, 2, SCHEMA_VERSION)
MAX_MB_ENV, DEFAULT_MAX_MB = "BENCH_RESULTS_MAX_MB", 64


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
        data = json.loads(_read_bounded(path).decode("utf-8"))
    except RecursionError:
        raise ResultsFileError(
            f"{path} is not a results file: its JSON is nested too deep", hint=HINT
        ) from None
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


def max_results_bytes() -> int:
    return env_int(MAX_MB_ENV, DEFAULT_MAX_MB) * 2**20


def _read_bounded(path: Path) -> bytes:
    """The file's bytes: a regular file only (not a FIFO that never ends, nor /dev/zero behind a link),
    and no more than the cap (a run of thousands of cases is a few MiB)."""
    irregular = ResultsFileError(f"{path} is not a results file: it is not a regular file", hint=HINT)
    if not stat.S_ISREG(os.stat(path).st_mode):  # before open(), which would wait on a FIFO for ever
        raise irregular
    with open(path, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):  # swapped since: checked as opened too
            raise irregular
        cap = max_results_bytes()
        data = file.read(cap + 1)
    if len(data) > cap:
        raise ResultsFileError(
            f"{path} is larger than {cap // 2**20} MiB, the cap on a results file",
            hint=f"{MAX_MB_ENV}=<MiB> raises it, if the file is really a run",
        )
    return data


def validate(data: Any, origin: str = "the results") -> Run:
    """A Run from parsed JSON, or a ResultsFileError naming the first problems and their fields."""
    if not isinstance(data, dict):
        raise ResultsFileError(f"{origin} is not a results file: the top level is a {type(data).__name__}")
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise ResultsFileError(
            f"{origin} has schema_version {version!r}; this bench reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}",
            hint="report it with the torch-bench release that wrote it" if isinstance(version, int) else HINT,
        )
    data = upgrade(data)
    try:
        import pydantic
    except ImportError:  # a declared dependency; a bare GPU box running from PYTHONPATH may lack it
        print(f"note: pydantic is not installed, so {origin} was checked without it", file=sys.stderr)
        try:
            return build(Run, data)
        except (ValueError, TypeError) as error:
            raise ResultsFileError(f"{origin} is not a valid results file: {error}", hint=HINT) from None
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
    """The JSON Schema of results.json (the current version), generated from the record types."""
    schema = dict(_adapter().json_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"torch-bench results.json, schema version {SCHEMA_VERSION}"
    return schema


# --- the builder used without pydantic ------------------------------------------------------------


def build(kind: Any, value: Any, where: str = "") -> Any:
    """`value` (parsed JSON) as an instance of type `kind`, following the dataclasses' type hints.

    Dataclasses are built from dicts (unknown keys refused), lists and tuples item by item, enums
    from their values, unions by the first arm that fits. Raises ValueError naming where it failed.
    """
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return build(arm, value, where)
            except (ValueError, TypeError) as error:
                problems.append(str(error))
        raise ValueError(problems[0] if problems else f"{where or 'value'}: null is not allowed")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        built = [build(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(built) if origin is tuple else built
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
        return {k: build(args[1] if args else Any, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(kind, type) and issubclass(kind, Enum):
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(str(m) for m in kind)}") from None
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return _build_dataclass(kind, value, where)
    return _build_scalar(kind, value, where)


def _build_dataclass(kind: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"{where or kind.__name__}: expected an object, got {type(value).__name__}")
    hints = _hints(kind)
    fields = {f.name: f for f in dataclasses.fields(kind) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"{where or 'the top level'}: unknown field(s) {', '.join(unknown)}")
    arguments = {
        name: build(hints[name], item, f"{where}.{name}" if where else name) for name, item in value.items()
    }
    try:
        return kind(**arguments)
    except TypeError as error:  # a required field is missing
        raise ValueError(f"{where or 'the top level'}: {error}") from None
    except ValueError as error:  # the record's own invariants
        raise ValueError(f"{where or 'the top level'}: {error}") from None


@cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind, vars(sys.modules[kind.__module__]))


def _build_scalar(kind: Any, value: Any, where: str) -> Any:
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind in (int, str, bool) and type(value) is kind:
        return value
    if kind is type(None) and value is None:
        return None
    name = getattr(kind, "__name__", str(kind))
    raise ValueError(f"{where}: expected {name}, got {type(value).__name__} {value!r:.40}")


# --- a target that is not a results file ----------------------------------------------------------


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


if __name__ == "__main__":  # python -m bench.core.schema > bench/core/results.schema.json
    print(json.dumps(json_schema(), indent=1))
