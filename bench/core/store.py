"""The run folder: created and proven writable before anything is measured, and written atomically.

`results.json` is rewritten through a temporary file and `os.replace` after each case, so a process
killed at any moment leaves the previous complete version, never half a file.
"""

from __future__ import annotations

import errno
import fcntl
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
from bench.core.errors import UsageError, WriteFailure
from bench.core.results import Run

RESULTS_FILE = "results.json"
CLAIM_FILE = ".bench-claim"  # locked while a run writes the folder
PYTEST_BENCHMARK_FILE = "pytest-benchmark.json"
_claims: dict[Path, int] = {}  # the folders this process holds, and their locked files


def new_run_id() -> str:
    return secrets.token_hex(3)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_run_folder(base: Path, run_id: str, host: str | None = None) -> Path:
    """`results/<date>-<host>-<short id>/`; the date is local, the id random (`host`: its redacted name)."""
    host = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in host or platform.node() or "host")
    return base / f"{datetime.now().strftime('%Y-%m-%d')}-{host}-{run_id}"


def prepare_run_folder(folder: Path, run_id: str = "", claim: bool = True) -> Path:
    """Creates `folder`, claims it for this run (with `claim`), and proves it writable, before
    anything is measured. `claim=False` for rank 0 of a run whose supervisor holds the claim."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if claim:
            claim_run_folder(folder, run_id)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise UsageError(
            f"cannot write results to {folder}: {error.strerror or error}", hint=_unwritable_hint(folder)
        ) from None
    if (folder / RESULTS_FILE).exists():
        release_run_folder(folder)
        raise UsageError(
            f"{folder} already holds a run ({RESULTS_FILE}); it would be overwritten",
            hint="give --out a new folder (or leave --out out for a fresh one under results/)",
        )
    note_run_folder(folder)  # a crash log goes here
    return folder


def claim_run_folder(folder: Path, run_id: str) -> None:
    """An exclusive lock on `folder/.bench-claim`, held until the run ends (or the process dies, when
    the system drops it): of two runs started into one folder at once, the second is refused here,
    told which run holds it, before it measures anything."""
    path = folder / CLAIM_FILE
    handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666 & ~_umask())
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(handle, 500).decode("utf-8", "replace").strip() or "another run"
        os.close(handle)
        raise UsageError(
            f"{folder} is being written by {holder}; two runs cannot share a folder",
            hint="wait for that run to end, or give --out another folder",
        ) from None
    except BaseException:
        os.close(handle)
        raise
    os.ftruncate(handle, 0)
    os.write(handle, f"run {run_id or '?'} (pid {os.getpid()}, started {utc_now()})\n".encode())
    _claims[folder.resolve()] = handle


def release_run_folder(folder: Path) -> None:
    """The claim's file removed and its lock dropped: the run is over."""
    handle = _claims.pop(folder.resolve(), None)
    if handle is None:
        return
    try:
        (folder / CLAIM_FILE).unlink(missing_ok=True)
    except OSError:
        pass
    os.close(handle)


def _unwritable_hint(folder: Path) -> str:
    """Says whose folder it is when ownership is the problem (the usual case in containers)."""
    hint = "choose a writable folder with --out, or fix its permissions"
    try:
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        owner = existing.stat() if existing is not None and hasattr(os, "getuid") else None
    except OSError:  # a name too long to look at, say: the plain hint
        return hint
    if existing is None or owner is None:
        return hint
    if owner.st_uid != os.getuid():
        hint = (
            f"{existing} belongs to uid {owner.st_uid}:{owner.st_gid} but this process runs as "
            f"{os.getuid()}:{os.getgid()}; {hint}"
        )
        if env_text("BENCH_IMAGE"):
            hint += " (with Docker Compose: BENCH_UID=$(id -u) BENCH_GID=$(id -g) docker compose run ...)"
    return hint


WRITE_HINTS = {
    errno.ENOSPC: "the disk is full: free some space; the cases saved before this write are kept",
    errno.EDQUOT: "the disk quota is used up: free some space; the cases saved before this write are kept",
    errno.EROFS: "the file system is read-only: give --out a folder on a writable one",
    errno.EACCES: "no permission to write there: give --out a writable folder, or fix its permissions",
    errno.EPERM: "no permission to write there: give --out a writable folder, or fix its permissions",
    errno.ENOENT: "the folder is gone (deleted while the run went on?)",
}


def write_atomic(path: Path, text: str | bytes) -> None:
    """Writes `text` (or bytes) to `path` so that readers see the old file or the new one, never a mix; the one
    writer of every file of a run folder. A link planted at `path` is replaced, never followed.
    A write the file system refuses raises WriteFailure saying what to do, one line; the old file
    stays as it was."""
    tmp: str | None = None
    try:
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:60]}.")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        data = text.encode("utf-8", "backslashreplace") if isinstance(text, str) else text
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as error:
        _discard(tmp)
        raise WriteFailure(
            f"cannot write {path}: {error.strerror or error}",
            hint=WRITE_HINTS.get(error.errno or 0, "check the folder and the disk it is on"),
        ) from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass


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
