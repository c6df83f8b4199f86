"""Reading the machine facts a run recorded (`Run.env`, collected by `bench.env`), defensively.

The facts are what a probe could read on the machine that made the run, so any level may be missing
or of another shape in a file from another machine or release: these readers return None (or
`missing`) instead of failing.
"""

from __future__ import annotations

import math
from typing import Any


def fact(env: Any, *path: str) -> Any:
    """The value at `path` in nested dicts, or None where a level is missing or not a dict."""
    value = env
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def fact_text(env: Any, *path: str, missing: str = "?") -> str:
    value = fact(env, *path)
    return missing if value is None or isinstance(value, (dict, list)) else str(value)


def fact_number(env: Any, *path: str) -> float | None:
    value = fact(env, *path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)
