"""The environment variables the harness reads, each read through here and checked where it is read.

A bad value is a UsageError (exit 2) that names the variable, the value and what it takes, never a
traceback or a silent default. `bench run` checks every one of them before anything runs
(`check_environment`), so a value only its ranks would read (BENCH_COLLECTIVE_TIMEOUT_S) is refused
in one line, at once, with or without `--nproc`. An empty value counts as unset, except for text
variables whose emptiness means something (CUDA_VISIBLE_DEVICES= hides every GPU).
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import UsageError

MAX_TEXT = 4096  # characters; a longer value is refused, not cut


@dataclass(frozen=True)
class Variable:
    name: str
    kind: str  # int | float | text | path | threads
    meaning: str
    example: str
    minimum: float | None = None
    maximum: float | None = None
    multiline: bool = False  # text: newlines and tabs allowed (other control characters never)
    strip: bool = False  # text: surrounding whitespace (a trailing newline) dropped before the checks
    directory: str = ""  # path: "existing" (must be a folder), "folder" (a folder if it exists)
    absolute: bool = False  # path: must be absolute after ~ is expanded


VARIABLES: dict[str, Variable] = {
    variable.name: variable
    for variable in (
        Variable(
            "BENCH_COLLECTIVE_TIMEOUT_S", "float", "seconds a collective or rendezvous of the ranks may wait",
            "30", minimum=1, maximum=86_400,
        ),
        Variable("BENCH_DATA_DIR", "path", "the folder of the data sets", "/data", directory="folder"),
        Variable(
            "XDG_CACHE_HOME", "path", "the cache folder (data sets default to $XDG_CACHE_HOME/torch-bench/data)",
            "$HOME/.cache", directory="folder", absolute=True,
        ),
        Variable(
            "BENCH_FAULT_DIR", "path", "where failing ranks leave fault reports (set by bench run --nproc)",
            "/tmp/bench-faults-x", directory="existing",
        ),
        Variable(
            "BENCH_COMMAND_LINE", "text", "the command line the ranks record (set by bench run --nproc)",
            "'bench run --nproc 2'", multiline=True,
        ),
        Variable(
            "BENCH_RESULTS_MAX_MB", "int", "the largest results file report and compare read, in MiB", "64",
            minimum=1, maximum=1 << 20,
        ),
        Variable("BENCH_REDACT_SALT", "text", "the secret salt of --redact's hashes (default: a file)", "a-secret"),
        Variable(
            "BENCH_MODEL_SIZE", "text", "the built-in models' size: full (the default) or tiny (tests)", "tiny",
            strip=True,
        ),
        Variable("BENCH_IMAGE", "text", "the container image's name (set by the Dockerfile)", "torch-bench:cpu"),
        Variable(
            "BENCH_IMAGE_FLAVOUR", "text", "the image's torch build (set by the Dockerfile)", "cpu", strip=True
        ),
        Variable(
            "BENCH_REQUESTED_TORCH_FLAVOUR", "text", "the torch build this environment asked for (set by Nox)",
            "cpu", strip=True,
        ),
        Variable(
            "BENCH_BASE_IMAGE", "text", "the image the container was built from (set by the Dockerfile)",
            "python:3.11-slim",
        ),
        Variable(
            "OMP_NUM_THREADS", "threads", "OpenMP threads: a whole number from 1, or such numbers comma-separated",
            "4",
        ),
        Variable("CUDA_VISIBLE_DEVICES", "text", "the GPUs CUDA may use (indices or UUIDs, comma-separated)", "0,1"),
        Variable("WORLD_SIZE", "int", "the number of ranks (set by torchrun)", "2", minimum=1, maximum=1_000_000),
        Variable(
            "LOCAL_WORLD_SIZE", "int", "the ranks on this machine (set by torchrun)", "2", minimum=1, maximum=100_000
        ),
        Variable("LOCAL_RANK", "int", "this rank's index on its machine (set by torchrun)", "0", 0, 100_000),
        Variable(
            "TORCHELASTIC_RESTART_COUNT", "int", "how often torchrun restarted the ranks (set by torchrun)", "0",
            minimum=0, maximum=1_000_000,
        ),
    )
}  # fmt: skip


def _spec(name: str, kind: str) -> Variable:
    variable = VARIABLES[name]
    assert variable.kind == kind, f"{name} is a {variable.kind} variable, not {kind}"
    return variable


def _refuse(variable: Variable, value: str, problem: str) -> UsageError:
    shown = repr(value if len(value) <= 80 else value[:77] + "...")
    return UsageError(
        f"environment variable {variable.name}={shown} {problem}",
        hint=f"{variable.name} is {variable.meaning}: e.g. {variable.name}={variable.example}, or unset it",
    )


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    return None if value is None or not value.strip() else value


def _bounded(variable: Variable, value: str, number: float) -> None:
    low, high = variable.minimum, variable.maximum
    if (low is not None and number < low) or (high is not None and number > high):
        raise _refuse(variable, value, f"is out of range: give {low:g} to {high:g}")


def env_int(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    variable, value = _spec(name, "int"), _raw(name, environ)
    if value is None:
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise _refuse(variable, value, "is not a whole number") from None
    _bounded(variable, value, number)
    return number


def env_float(name: str, default: float, environ: Mapping[str, str] | None = None) -> float:
    variable, value = _spec(name, "float"), _raw(name, environ)
    if value is None:
        return default
    try:
        number = float(value.strip())
    except ValueError:
        raise _refuse(variable, value, "is not a number") from None
    if not math.isfinite(number):
        raise _refuse(variable, value, "is not a finite number")
    _bounded(variable, value, number)
    return number


def _check_text(variable: Variable, value: str) -> str:
    if len(value) > MAX_TEXT:
        raise _refuse(variable, value, f"is {len(value)} characters long (at most {MAX_TEXT})")
    allowed = "\n\t" if variable.multiline else ""
    bad = next((ch for ch in value if unicodedata.category(ch) == "Cc" and ch not in allowed), None)
    if bad is not None:
        raise _refuse(variable, value, f"holds the control character {bad!r}")
    return value


def env_text(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value as it is (an empty one included), or None when unset."""
    variable = _spec(name, "text")
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        return None
    return _check_text(variable, value.strip() if variable.strip else value)


def env_path(name: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """The folder named (`~` expanded), or None when unset or empty."""
    variable, value = _spec(name, "path"), _raw(name, environ)
    if value is None:
        return None
    path = Path(_check_text(variable, value)).expanduser()
    if variable.absolute and not path.is_absolute():
        raise _refuse(variable, value, "is not an absolute path")
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as error:  # a name too long, a loop of links
        raise _refuse(variable, value, f"cannot be looked at: {error.strerror or error}") from None
    if variable.directory == "existing" and not is_dir:
        raise _refuse(variable, value, "is not an existing folder")
    if variable.directory == "folder" and exists and not is_dir:
        raise _refuse(variable, value, "is not a folder")
    return path


THREADS = re.compile(r"\s*[1-9]\d{0,5}\s*(,\s*[1-9]\d{0,5}\s*)*")


def env_threads(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """An OpenMP thread count (or nesting list) as given, or None when unset or empty."""
    variable, value = _spec(name, "threads"), _raw(name, environ)
    if value is not None and not THREADS.fullmatch(value):
        raise _refuse(variable, value, "is not a whole number from 1 (or a comma-separated list of them)")
    return value


READERS: dict[str, Callable[[str, Mapping[str, str] | None], object]] = {
    "int": lambda name, environ: env_int(name, 0, environ),
    "float": lambda name, environ: env_float(name, 0.0, environ),
    "text": env_text,
    "path": env_path,
    "threads": env_threads,
}


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Reads every variable the harness knows: the first bad one is a UsageError naming it."""
    for name, variable in VARIABLES.items():
        READERS[variable.kind](name, environ)
