"""`python -m bench.cli.ab_probe <bench run options>`: can this interpreter run these options? One JSON line.

`bench ab` runs it in each side's interpreter and environment before anything is measured: torch and
torchvision import (a wrong pair fails here), the options parse and validate exactly as `bench run`
would take them, the environment variables are valid, and the plan (the cases, in order) is known.
The answer is one JSON line on stdout: `{"ok": true, "torch": ..., "cases": [...]}` or
`{"ok": false, "error": "..."}` (exit 2). Nothing is measured.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import platform
import sys
from collections.abc import Sequence
from typing import Any


def answer(**fields: Any) -> int:
    print(json.dumps(fields, default=str))
    return 0 if fields.get("ok") else 2


def main(argv: Sequence[str]) -> int:
    for package in ("torch", "torchvision"):
        if importlib.util.find_spec(package) is None:
            return answer(
                ok=False, error=f"{package} is not installed in this interpreter ({sys.executable})"
            )
    from bench.env.collect import collect_torch, collect_torchvision

    try:
        torch_facts = collect_torch()
    except Exception as error:  # not installed, or a broken install: the side cannot run at all
        return answer(ok=False, error=f"torch does not import: {type(error).__name__}: {error}")
    vision = collect_torchvision()
    if not vision.get("available"):
        return answer(
            ok=False,
            error=f"torchvision does not import with torch {torch_facts['version']}: {vision['reason']}",
        )
    from bench.cli import build_parser
    from bench.cli.run import run_options
    from bench.core.envvars import check_environment
    from bench.core.errors import BenchError
    from bench.core.plan import plan

    parser, _ = build_parser()
    messages = io.StringIO()
    try:
        with contextlib.redirect_stderr(messages):
            args, unknown = parser.parse_known_args(["run", *argv])
    except SystemExit:
        lines = [line for line in messages.getvalue().splitlines() if line.strip()]
        return answer(ok=False, error=lines[-1] if lines else "the options do not parse")
    if unknown:
        return answer(ok=False, error=f"bench run: unrecognized arguments: {' '.join(unknown)}")
    try:
        check_environment()
        options = run_options(args)
    except BenchError as error:
        return answer(ok=False, error=error.message, hint=error.hint)
    return answer(
        ok=True,
        executable=sys.executable,
        python=platform.python_version(),
        torch=torch_facts["version"],
        torchvision=vision["version"],
        torch_facts=torch_facts,
        cases=[key.label() for key in plan(options)],
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
