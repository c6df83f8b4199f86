"""Where the traceback of an unexpected exception goes: a crash log, not the user's terminal.

The log is written into the run folder being written when there is one (`note_run_folder`, called
when a run claims its folder), else under the cache folder ($XDG_CACHE_HOME or ~/.cache, in
torch-bench/crash/), else the temporary folder. It holds the version, the command line, Python and
the platform, and the traceback; no environment variable and nothing else about the machine.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import traceback
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

_run_folder: Path | None = None


def note_run_folder(folder: Path) -> None:
    """The run folder this process writes: a crash log goes there, beside the results it concerns."""
    global _run_folder
    _run_folder = folder


def noted_run_folder() -> Path | None:
    return _run_folder


def crash_folders() -> list[Path]:
    """Where a crash log may go, best first."""
    from bench.core.envvars import env_path

    folders = [_run_folder] if _run_folder is not None else []
    try:
        cache = env_path("XDG_CACHE_HOME") or Path.home() / ".cache"
        folders.append(cache / "torch-bench" / "crash")
    except Exception:  # a bad XDG_CACHE_HOME or no home: the temporary folder will do
        pass
    folders.append(Path(tempfile.gettempdir()))
    return folders


def crash_report(error: BaseException, argv: Sequence[str], version: str) -> str:
    lines = [
        f"bench {version} crashed at {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"command: bench {' '.join(argv)}",
        f"python: {sys.version.split()[0]} ({sys.executable})",
        f"platform: {platform.platform()}",
        "",
        *traceback.format_exception(type(error), error, error.__traceback__),
    ]
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


def write_crash_log(error: BaseException, argv: Sequence[str], version: str) -> Path | None:
    """Writes the crash log into the first folder that takes it; None when none did."""
    name = f"bench-crash-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    text = crash_report(error, argv, version)
    for folder in crash_folders():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            with open(path, "x", encoding="utf-8", errors="backslashreplace") as file:
                file.write(text)
            return path
        except OSError:
            continue
    return None
