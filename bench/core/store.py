"""The run folder: created and proven writable before anything is measured, and written atomically.

`results.json` is rewritten through a temporary file and `os.replace` after each case, so a process
killed at any moment leaves the previous complete version, never half a file.
"""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.core.crash import note_run_folder
from bench.core.envvars import env_text
from bench.core.errors import UsageError
from bench.core.results import Run

RESULTS_FILE = "results.json"
PYTEST_BENCHMARK_FILE = "pytest-benchmark.json"


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
    note_run_folder(folder)  # a crash log goes here
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
        if env_text("BENCH_IMAGE"):
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
