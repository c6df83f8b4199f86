"""Loading a results file on hostile input (issue 23, item 3): only regular files, a size cap naming its
variable, bounded nesting, and figures that cannot be (a negative FLOP count) refused. Real `bench
report` processes: one line, exit 2, at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import reference_copy
from tests.test_hostile import TRACEBACK, bench_process, quiet_cache

__all__ = ["quiet_cache"]  # the fixture, shared with test_hostile


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_report_refuses_what_is_not_a_regular_file_at_once(
    kind: str, tmp_path: Path, quiet_cache: dict[str, str]
) -> None:
    """Was: a FIFO hung `bench report` for ever; a link to /dev/zero grew past 4 GB."""
    path = tmp_path / "results.json"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    code, _, stderr = bench_process("report", str(path), env=quiet_cache)
    assert code == 2 and "not a regular file" in stderr and TRACEBACK not in stderr, stderr


def test_report_refuses_a_file_over_the_cap_naming_it(tmp_path: Path, quiet_cache: dict[str, str]) -> None:
    path = tmp_path / "results.json"
    path.write_bytes(b" " * (2 * 2**20))
    code, _, stderr = bench_process("report", str(path), env={**quiet_cache, "BENCH_RESULTS_MAX_MB": "1"})
    assert code == 2 and "larger than 1 MiB" in stderr and "BENCH_RESULTS_MAX_MB" in stderr, stderr


def test_report_refuses_a_negative_flops_per_sample(tmp_path: Path, quiet_cache: dict[str, str]) -> None:
    """Was: negative FLOP/s, and `compute-bound`."""
    folder = reference_copy(tmp_path)
    data = json.loads((folder / "results.json").read_text())
    data["cases"][0]["flops_per_sample"] = -1000
    (folder / "results.json").write_text(json.dumps(data))
    code, _, stderr = bench_process("report", str(folder), env=quiet_cache)
    assert code == 2 and "flops_per_sample is positive" in stderr and TRACEBACK not in stderr, stderr
