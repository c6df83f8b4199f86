"""Hostile and unlucky input to the CLI, in real processes: a closed pipe, junk files, junk environment
variables, junk float flags, an unexpected exception. Each checks the exit status the CLI documents
and that no traceback reaches the user. (Issue 23: items 3 and 4, the CLI's part.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import EXIT_BROKEN_PIPE, EXIT_CRASH, build_parser
from bench.cli.args import finite_float
from bench.core import envvars
from bench.core.errors import UsageError
from tests.conftest import REFERENCE_RUNS, ROOT, reference_copy

TRACEBACK = "Traceback (most recent call last)"


def bench_process(
    *args: str, env: dict[str, str] | None = None, close_stdout: bool = False, cwd: Path | None = None
) -> tuple[int, str, str]:
    """`python -m bench ARGS` as a user starts it; with close_stdout its reader goes away at once
    (`bench ... | head -c 0`): the read end of the pipe is closed before bench writes a byte."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd or ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    if close_stdout:
        process.stdout.close()
        stdout = ""
    else:
        stdout = process.stdout.read().decode(errors="replace")
    stderr = process.stderr.read().decode(errors="replace")
    return process.wait(timeout=300), stdout, stderr


@pytest.fixture
def quiet_cache(tmp_path: Path) -> dict[str, str]:
    """A cache folder of the test's own, so that crash logs do not land in the user's ~/.cache."""
    return {"XDG_CACHE_HOME": str(tmp_path / "cache")}


# --- a reader that goes away ---------------------------------------------------------------------


def test_check_into_a_closed_pipe_exits_141_quietly(quiet_cache: dict[str, str]) -> None:
    code, _, stderr = bench_process("check", close_stdout=True, env=quiet_cache)
    assert code == EXIT_BROKEN_PIPE == 141, stderr
    assert TRACEBACK not in stderr and "BrokenPipeError" not in stderr and "Exception ignored" not in stderr


def test_report_into_a_closed_pipe_still_writes_its_tables(
    tmp_path: Path, quiet_cache: dict[str, str]
) -> None:
    folder = reference_copy(tmp_path)
    for name in ("summary.md", "results.csv"):
        (folder / name).unlink(missing_ok=True)
    code, _, stderr = bench_process("report", str(folder), close_stdout=True, env=quiet_cache)
    assert code == EXIT_BROKEN_PIPE, stderr
    assert TRACEBACK not in stderr and "BrokenPipeError" not in stderr
    assert (folder / "summary.md").is_file() and (folder / "results.csv").is_file()  # files first


def test_compare_into_a_closed_pipe_exits_141(quiet_cache: dict[str, str]) -> None:
    run = str(REFERENCE_RUNS[0])
    code, _, stderr = bench_process("compare", run, run, close_stdout=True, env=quiet_cache)
    assert code == EXIT_BROKEN_PIPE, stderr
    assert TRACEBACK not in stderr and "BrokenPipeError" not in stderr


def test_help_into_a_closed_pipe_costs_no_traceback(quiet_cache: dict[str, str]) -> None:
    """argparse swallows the failed write of its help itself (exit 0); the guard catches what it lets by."""
    for args in (["--help"], ["run", "--help"]):
        code, _, stderr = bench_process(*args, close_stdout=True, env=quiet_cache)
        assert code in (0, EXIT_BROKEN_PIPE) and not stderr, (code, stderr)


# --- files that are not results files -------------------------------------------------------------


def _garbage(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.json"
    if kind == "missing":
        return path
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 20)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        text = (REFERENCE_RUNS[0] / "results.json").read_text()
        path.write_text(text[: len(text) // 2])
    elif kind == "not-an-object":
        path.write_text("[1, 2, 3]")
    elif kind == "wrong-schema":
        path.write_text(json.dumps({"schema_version": 999}))
    elif kind == "folder":
        path.mkdir()
    return path


GARBAGE = ["missing", "binary", "empty", "truncated", "not-an-object", "wrong-schema", "folder"]


@pytest.mark.parametrize("kind", GARBAGE)
def test_report_of_a_file_that_is_not_a_run_is_one_line_and_exit_2(
    kind: str, tmp_path: Path, quiet_cache: dict[str, str]
) -> None:
    code, stdout, stderr = bench_process("report", str(_garbage(tmp_path, kind)), env=quiet_cache)
    assert code == 2, stdout + stderr
    assert TRACEBACK not in stderr and stderr.startswith("bench report: error: "), stderr


@pytest.mark.parametrize("kind", ["missing", "binary", "truncated"])
def test_compare_with_a_file_that_is_not_a_run_exits_2(
    kind: str, tmp_path: Path, quiet_cache: dict[str, str]
) -> None:
    code, _, stderr = bench_process(
        "compare", str(REFERENCE_RUNS[0]), str(_garbage(tmp_path, kind)), env=quiet_cache
    )
    assert code == 2 and TRACEBACK not in stderr and stderr.startswith("bench compare: error: "), stderr


def test_report_of_json_nested_100000_deep_is_refused_in_one_line(
    tmp_path: Path, quiet_cache: dict[str, str]
) -> None:
    """Python's JSON reader raises RecursionError here: the loader names it, exit 2 (was a crash)."""
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    code, _, stderr = bench_process("report", str(path), env=quiet_cache)
    assert code == 2 and "nested too deep" in stderr, stderr
    assert TRACEBACK not in stderr and stderr.startswith("bench report: error: "), stderr


# --- an unexpected exception ------------------------------------------------------------------------

CRASHING = """
import sys
from bench import app, reading
from bench.cli import main

def broken(*args, **kwargs):
    raise ZeroDivisionError("a bug, planted by the test")

setattr(app if hasattr(app, sys.argv[1]) else reading, sys.argv[1], broken)
sys.exit(main(sys.argv[2:]))
"""


def _crash(where: str, *args: str, env: dict[str, str]) -> tuple[int, str]:
    process = subprocess.run(
        [sys.executable, "-c", CRASHING, where, *args],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return process.returncode, process.stderr


def _log_named(stderr: str) -> Path:
    assert len(stderr.splitlines()) == 1, stderr  # one line: what happened and where the traceback is
    match = re.search(r"; the traceback is in (\S+\.log) \(please report it\)$", stderr.strip())
    assert match, stderr
    return Path(match.group(1))


def test_an_unexpected_exception_is_one_line_and_a_crash_log(
    tmp_path: Path, quiet_cache: dict[str, str]
) -> None:
    code, stderr = _crash("report_job", "report", str(REFERENCE_RUNS[0]), env=quiet_cache)
    assert code == EXIT_CRASH == 70, stderr
    assert TRACEBACK not in stderr
    assert stderr.startswith("bench report: internal error: ZeroDivisionError: a bug, planted by the test"), (
        stderr
    )
    log = _log_named(stderr)
    assert log.is_relative_to(tmp_path / "cache" / "torch-bench" / "crash")
    text = log.read_text()
    assert TRACEBACK in text and "ZeroDivisionError: a bug, planted by the test" in text
    assert "command: bench report" in text


def test_a_run_that_crashes_leaves_its_crash_log_in_the_run_folder(
    tmp_path: Path, quiet_cache: dict[str, str]
) -> None:
    folder = tmp_path / "run"
    code, stderr = _crash(
        "collect_facts", "run", "--quick", "--dataset", "synthetic", "--out", str(folder), env=quiet_cache
    )
    assert code == EXIT_CRASH and TRACEBACK not in stderr, stderr
    assert _log_named(stderr).parent == folder
    assert not (tmp_path / "cache").exists()


# --- junk in the environment -------------------------------------------------------------------------

JUNK = {
    "BENCH_COLLECTIVE_TIMEOUT_S": ["abc", "nan", "inf", "-5", "0"],
    "WORLD_SIZE": ["two", "0", "1.5"],
    "LOCAL_WORLD_SIZE": ["x", "-1"],
    "LOCAL_RANK": ["-1", "zero"],
    "TORCHELASTIC_RESTART_COUNT": ["many"],
    "OMP_NUM_THREADS": ["abc", "0", "-2", "4,x"],
    "BENCH_DATA_DIR": ["/etc/hostname"],
    "XDG_CACHE_HOME": ["relative/cache"],
    "BENCH_FAULT_DIR": ["/nonexistent/faults"],
    "BENCH_IMAGE": ["torch-bench\n# fake heading", "x" * 5000],
    "CUDA_VISIBLE_DEVICES": ["0\x1b[31m"],
    "BENCH_REDACT_SALT": ["salt\x00", "a\nb"],
    "BENCH_RESULTS_MAX_MB": ["big", "0", "-1"],
    "BENCH_MODEL_SIZE": ["ti\x1b[31mny", "x" * 5000],
}


@pytest.mark.parametrize(
    ("name", "value"), [(name, value) for name, values in JUNK.items() for value in values]
)
def test_a_junk_variable_is_refused_naming_it(name: str, value: str) -> None:
    with pytest.raises(UsageError, match=f"environment variable {name}="):
        envvars.check_environment({name: value})


def test_every_variable_has_junk_tested() -> None:
    assert set(JUNK) | {
        "BENCH_COMMAND_LINE", "BENCH_IMAGE_FLAVOUR", "BENCH_REQUESTED_TORCH_FLAVOUR", "BENCH_BASE_IMAGE",
    } == set(envvars.VARIABLES)  # fmt: skip
    for name in ("BENCH_COMMAND_LINE", "BENCH_IMAGE_FLAVOUR", "BENCH_BASE_IMAGE"):
        with pytest.raises(UsageError, match=name):
            envvars.check_environment({name: "a\x00b"})


def test_good_values_pass_and_empty_means_unset(tmp_path: Path) -> None:
    good = {
        "BENCH_COLLECTIVE_TIMEOUT_S": "12.5", "WORLD_SIZE": "2", "OMP_NUM_THREADS": "4,2",
        "BENCH_DATA_DIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "new"), "BENCH_FAULT_DIR": str(tmp_path),
        "BENCH_COMMAND_LINE": "bench run --out 'a\nb'", "BENCH_IMAGE_FLAVOUR": " CU128\n", "CUDA_VISIBLE_DEVICES": "",
    }  # fmt: skip
    envvars.check_environment(good)
    assert envvars.env_float("BENCH_COLLECTIVE_TIMEOUT_S", 30, good) == 12.5
    assert envvars.env_float("BENCH_COLLECTIVE_TIMEOUT_S", 30, {"BENCH_COLLECTIVE_TIMEOUT_S": " "}) == 30
    assert envvars.env_int("WORLD_SIZE", 1, {}) == 1
    assert envvars.env_text("CUDA_VISIBLE_DEVICES", good) == ""  # empty hides every GPU: kept, not unset
    assert envvars.env_text("BENCH_IMAGE_FLAVOUR", good) == "CU128"


# a read: .get(...), getenv(...), or [...] that is not assigned to (setting a variable is no read)
READ = re.compile(r"environ\.get\(|getenv\(|os\.environ\[[^\]]*\](?!\s*=[^=])")
ALLOWED_READS = {  # (file, the line's text): reads that interpret nothing
    ("bench/engine/pytest_driver.py", 'previous_autoload = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")'),
}


def test_every_variable_the_harness_reads_goes_through_envvars() -> None:
    """A new `os.environ.get(...)` elsewhere in bench/ would read a value nobody checks."""
    stray = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative == "bench/core/envvars.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if READ.search(line) and (relative, line.strip()) not in ALLOWED_READS:
                stray.append(f"{relative}:{number}: {line.strip()}")
    assert not stray, "\n".join(stray)


def test_junk_collective_timeout_is_refused_before_torchrun_starts(tmp_path: Path) -> None:
    """Was three rank tracebacks with --nproc 2 and silently ignored without it."""
    for extra in ([], ["--nproc", "2"]):
        out = tmp_path / f"run{len(extra)}"
        code, _, stderr = bench_process(
            "run", "--quick", "--dataset", "synthetic", "--out", str(out), *extra,
            env={"BENCH_COLLECTIVE_TIMEOUT_S": "abc"},
        )  # fmt: skip
        assert code == 2, stderr
        assert TRACEBACK not in stderr and "starting" not in stderr
        assert "BENCH_COLLECTIVE_TIMEOUT_S='abc' is not a number" in stderr
        assert not out.exists()  # refused before anything, the folder included


def test_check_refuses_junk_omp_num_threads_naming_it() -> None:
    code, _, stderr = bench_process("check", env={"OMP_NUM_THREADS": "lots"})
    assert code == 2 and TRACEBACK not in stderr, stderr
    assert "OMP_NUM_THREADS='lots'" in stderr


# --- float flags: never NaN or infinity ---------------------------------------------------------------


def _required_positionals(parser: argparse.ArgumentParser) -> list[str]:
    return ["x" for action in parser._actions if not action.option_strings and action.nargs != 0]


def _value_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        action
        for action in parser._actions
        if action.option_strings and action.nargs != 0 and not isinstance(action, argparse._HelpAction)
    ]


def test_every_float_option_of_every_command_refuses_nan_and_infinity(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Walks the parser of every command: an option of type float must be finite_float, and every option
    given nan, inf or -inf either refuses it (exit 2, the option named) or keeps it as text."""
    _, commands = build_parser()
    checked = []
    for name, parser in commands.items():
        for action in _value_options(parser):
            assert action.type is not float, f"bench {name} {action.option_strings[0]}: use finite_float"
            option = max(action.option_strings, key=len)
            for value in ("nan", "inf", "-inf", "NaN", "+Infinity"):
                argv = [*_required_positionals(parser), f"{option}={value}"]
                if action.type is finite_float:
                    with pytest.raises(SystemExit) as exit:
                        parser.parse_args(argv)
                    assert exit.value.code == 2
                    message = capsys.readouterr().err
                    assert f"argument {option}" in message and "not a finite number" in message, message
                    checked.append(f"{name} {option}")
                else:
                    try:
                        parsed = getattr(parser.parse_args(argv), action.dest)
                    except SystemExit as exit:
                        assert exit.code == 2
                        capsys.readouterr()
                        continue
                    assert not (isinstance(parsed, float) and not math.isfinite(parsed)), (
                        name,
                        option,
                        value,
                    )
    expected = {"run --target-accuracy", "run --max-time", "compare --fail-above", "compare --min-effect"}
    assert expected <= set(checked), checked


def test_compare_fail_above_nan_is_refused(quiet_cache: dict[str, str]) -> None:
    """`--fail-above nan` switched the CI gate off: every slowdown compared false with NaN, exit 0."""
    run = str(REFERENCE_RUNS[0])
    for value in ("nan", "inf"):
        code, stdout, stderr = bench_process("compare", run, run, "--fail-above", value, env=quiet_cache)
        assert code == 2, stdout + stderr
        assert (
            "argument --fail-above" in stderr and "not a finite number" in stderr and TRACEBACK not in stderr
        )


def test_finite_float_takes_ordinary_numbers() -> None:
    assert finite_float("2.5") == 2.5 and finite_float("-1e3") == -1000.0
    for text in ("nan", "inf", "-inf", "1e400", "abc", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            finite_float(text)


@pytest.mark.slow
def test_a_run_into_a_closed_pipe_keeps_every_file(tmp_path: Path, quiet_cache: dict[str, str]) -> None:
    """A real (tiny) benchmark whose stdout reader is gone: the files are written, the exit is 141."""
    folder = tmp_path / "run"
    code, _, stderr = bench_process(
        "run", "--quick", "--dataset", "synthetic", "--workloads", "forward", "--batch-sizes", "32",
        "--max-time", "0.05", "--devices", "cpu", "--out", str(folder), close_stdout=True, env=quiet_cache,
    )  # fmt: skip
    assert code == EXIT_BROKEN_PIPE, stderr
    assert TRACEBACK not in stderr and "BrokenPipeError" not in stderr
    data = json.loads((folder / "results.json").read_text())
    assert data["state"] == "complete" and data["cases"]
    assert (folder / "summary.md").is_file() and (folder / "results.csv").is_file()
