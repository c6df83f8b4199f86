"""Redaction (issue 23, item 6): a run folder made safe to share. Real runs: `bench redact` on a copy of
one, and a `bench run --redact`; then a word search over every file for this machine's host name, the
user name and the home path finds nothing, and every number of the results equals the original's.
"""

from __future__ import annotations

import getpass
import json
import platform
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench.core.redact import Redactor, names_to_redact, redact_benchmark_json
from tests.conftest import run_cli

SALT = {"BENCH_REDACT_SALT": "a salt of the test's own"}
TINY = (
    "--quick",
    "--dataset",
    "synthetic",
    "--workloads",
    "forward",
    "--batch-sizes",
    "64",
    "--max-time",
    "0.2",
)


def numbers(value: Any, path: str = "") -> list[tuple[str, float]]:
    """Every number of a JSON tree with where it is (list positions included)."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [(path, value)]
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in numbers(item, f"{path}/{key}")]
    if isinstance(value, list):
        return [pair for index, item in enumerate(value) for pair in numbers(item, f"{path}/{index}")]
    return []


def leaks(folder: Path, home: Path) -> list[str]:
    """Lines of any file in `folder` naming this host, this user or the home folder (as whole words)."""
    words = {platform.node(), getpass.getuser()}
    found = []
    for path in folder.rglob("*"):
        if not path.is_file() or path.suffix == ".png":
            continue
        text = path.read_text(errors="replace")
        if str(home) in text:
            found.append(f"{path.name}: the home path")
        for word in words:
            if re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w-])", text):
                found.append(f"{path.name}: {word!r}")
    return found


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A home folder whose path holds a user name, so that paths under it are recorded (the data's cache)."""
    folder = tmp_path / "home" / "alice"
    folder.mkdir(parents=True)
    return {"HOME": str(folder), "XDG_CACHE_HOME": str(folder / ".cache"), **SALT}


@pytest.mark.slow
def test_bench_redact_leaves_no_name_and_changes_no_figure(tmp_path: Path, home: dict[str, str]) -> None:
    original = tmp_path / "run"
    result = run_cli("run", *TINY, "--out", str(original), env=home, cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert leaks(original, Path(home["HOME"])), "the test proves nothing: the run named nobody"
    copy = tmp_path / "shared"
    shutil.copytree(original, copy)
    redacted = run_cli("redact", str(copy), env=home)
    assert redacted.returncode == 0, redacted.output
    assert leaks(copy, Path(home["HOME"])) == []
    before, after = (json.loads((folder / "results.json").read_text()) for folder in (original, copy))
    assert numbers(before) == numbers(after)  # every figure, where it was
    assert after["env"]["host"].startswith("host-") and "home-" in after["dataset"]["source"]
    busy = after["env"]["load"]["busy_processes"]
    assert all(process["name"].startswith("process-") for process in busy)
    assert after["command_line"].startswith("bench run ")  # the command is kept, its paths redacted
    again = run_cli("report", str(copy))
    assert again.returncode == 0 and platform.node() not in again.stdout.split()


@pytest.mark.slow
def test_run_with_redact_writes_no_name(tmp_path: Path, home: dict[str, str]) -> None:
    out = tmp_path / "run"
    result = run_cli("run", *TINY, "--redact", "--out", str(out), env=home, cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert leaks(out, Path(home["HOME"])) == []
    assert json.loads((out / "pytest-benchmark.json").read_text())["commit_info"]["project"].startswith(
        "git-"
    )


def test_hashes_are_stable_under_one_salt_and_differ_under_another() -> None:
    names = {"host": ["gpu-box-7"], "user": ["alice"], "home": ["/home/alice"]}
    one, same, other = Redactor(b"s1", names), Redactor(b"s1", names), Redactor(b"s2", names)
    text = "alice@gpu-box-7:/home/alice/data GPU-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
    assert one.text(text) == same.text(text) != other.text(text)
    redacted = one.text(text)
    assert "alice" not in redacted and "gpu-box-7" not in redacted and "0a1b2c3d" not in redacted
    assert redacted.startswith(one.token("user", "alice") + "@" + one.token("host", "gpu-box-7") + ":")
    assert one.text("gpu-box-70 and malice") == "gpu-box-70 and malice"  # names, not parts of names


def test_a_case_s_identity_and_figures_are_never_rewritten() -> None:
    redactor = Redactor(b"s", {"host": ["cpu"], "user": [], "home": []})
    data = {"key": {"device": "cpu"}, "options": {"devices": ["cpu"]}, "env": {"host": "cpu"}, "n": 3}
    assert redactor.tree(data) == {**data, "env": {"host": redactor.token("host", "cpu")}}


def test_names_come_from_the_run_s_own_paths() -> None:
    names = names_to_redact({"python": {"executable": "/home/bob/venv/bin/python"}, "host": "box"})
    assert {"bob"} <= names["user"] and "/home/bob" in names["home"] and "box" in names["host"]


def test_pytest_benchmark_s_git_identity_is_hashed() -> None:
    redactor = Redactor(b"s", {"host": ["box"], "user": [], "home": []})
    data = {
        "machine_info": {"node": "box"},
        "commit_info": {"id": "abc123", "project": "secret-project", "dirty": True},
    }
    redacted = redact_benchmark_json(data, redactor)
    assert redacted["machine_info"]["node"].startswith("host-")
    assert redacted["commit_info"]["project"].startswith("git-") and redacted["commit_info"]["dirty"] is True
