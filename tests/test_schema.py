"""Reading results files: validation against the record types, the JSON Schema, version 1 files, bad paths.

The property test takes a real results file, breaks it the ways files get broken (a key deleted,
a value replaced by null, a string, a list, NaN or 1e308) and checks that `bench report` and
`bench compare` either render it or refuse it with exit status 2 and a message naming the field:
never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.core.errors import ResultsFileError
from bench.core.schema import SCHEMA_FILE, json_schema, load_run
from bench.core.store import RESULTS_FILE
from bench.core.upgrade import upgrade_v1
from tests.conftest import ROOT, load_json, run_cli

V1_FILE = ROOT / "tests" / "data" / "results-v1.json"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"schema_version": 2, "run_id": "x", "env": {}, "data', "invalid JSON"),
        ("[1, 2]", "top level is a list"),
        ('{"hello": 1}', "schema_version None"),
        ('{"schema_version": 99}', "schema_version 99"),
        (
            '{"schema_version": 2, "run_id": "x", "created": "now", "env": {}, "options": {}}',
            "dataset: Field required",
        ),
    ],
)
def test_files_that_are_not_results_are_refused_with_the_reason(
    tmp_path: Path, content: str, message: str
) -> None:
    if "Field required" in message:  # pydantic's wording; without it the builder names the first problem
        pytest.importorskip("pydantic", reason="the message checked is pydantic's, not installed here")
    path = tmp_path / RESULTS_FILE
    path.write_text(content)
    with pytest.raises(ResultsFileError) as error:
        load_run(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_a_broken_field_is_named_with_its_place_in_the_file(small_run: Path, tmp_path: Path) -> None:
    data = load_json(small_run / RESULTS_FILE)
    data["cases"][2]["passes"][1]["samples_s"][0] = None
    data["cases"][4]["batch_size"] = "many"
    (tmp_path / RESULTS_FILE).write_text(json.dumps(data))
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 2, result.output
    assert "cases.2.passes.1.samples_s.0" in result.stderr and "cases.4.batch_size" in result.stderr
    assert "Traceback" not in result.output


def test_a_path_that_does_not_exist_is_said_to_not_exist(small_run: Path, tmp_path: Path) -> None:
    (tmp_path / "not-a-run").mkdir()
    shutil.copytree(small_run, tmp_path / "a-run")
    result = run_cli("report", str(tmp_path / "typo"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert str(tmp_path / "a-run") in result.stderr and "not-a-run" not in result.stderr  # only real runs
    parent = run_cli("compare", str(tmp_path), str(tmp_path / "a-run"))
    assert parent.returncode == 2
    assert "holds run folders, not a run" in parent.stderr and str(tmp_path / "a-run") in parent.stderr
    lone = tmp_path / "empty"
    lone.mkdir()
    nothing = run_cli("report", str(lone / "missing"))
    assert (
        nothing.returncode == 2
        and "does not exist" in nothing.stderr
        and "run folders in" not in nothing.stderr
    )


def test_version_1_files_are_read_pass_by_pass(tmp_path: Path) -> None:
    """The committed v1 reference run: pooled samples are split back into their passes."""
    raw = json.loads(V1_FILE.read_text())
    run = load_run(V1_FILE)
    assert raw["schema_version"] == 1 and run.schema_version == 3 and len(run.cases) == len(raw["cases"])
    for old, new in zip(raw["cases"], run.cases, strict=True):
        assert new.samples_s == old["samples_s"], new.key.label()
        assert new.samples_per_unit == old["samples_per_call"]
    step = next(c for c in run.cases if c.key.workload == "train_step")
    old_step = next(c for c in raw["cases"] if c["workload"] == "train_step")
    assert [len(r.samples_s) for r in step.passes] == old_step["details"]["pass_rounds"]
    assert step.passes[0].calls_per_round == old_step["details"]["calls_per_round"]
    assert step.passes[1].calls_per_round is None  # v1 kept only pass 1's calibration: not guessed
    train = next(c for c in run.cases if c.key.workload == "train")
    old_train = next(c for c in raw["cases"] if c["workload"] == "train")
    assert len(train.runs) == 1 and train.final_accuracy == old_train["test_accuracy"][-1]
    assert upgrade_v1(raw)["schema_version"] == 2
    shutil.copy(V1_FILE, tmp_path / RESULTS_FILE)
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 0, result.output
    assert "not recorded" in (tmp_path / "summary.md").read_text()  # v1 did not record its timing policy


def test_the_shipped_json_schema_is_generated_from_the_records() -> None:
    pytest.importorskip("pydantic", reason="the JSON Schema is generated by pydantic, not installed here")
    shipped = json.loads(SCHEMA_FILE.read_text())
    assert shipped == json.loads(json.dumps(json_schema())), (
        "bench/core/results.schema.json is stale: python -m bench.core.schema > bench/core/results.schema.json"
    )
    assert {"run_id", "env", "dataset", "options", "cases"} <= set(shipped["required"]) | set(
        shipped["properties"]
    )
    case = shipped["$defs"]["CaseResult"]
    assert "passes" in case["properties"] and "median_s" not in case["properties"]


# --- property: broken files are refused with a field, never a traceback ---------------------------

BREAKAGES = ("delete", None, "text", [], math.nan, 1e308)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _break(data: Any, path: tuple[Any, ...], breakage: Any) -> None:
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if breakage == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = breakage


def _call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _names_a_change(message: str, changed: list[tuple[Any, ...]]) -> bool:
    """Whether the message names a broken field: one of the changed paths, or a field above it."""
    return any(
        ".".join(map(str, path[:length])) in message for path in changed for length in range(len(path), 0, -1)
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_broken_copies_of_a_real_file_never_end_in_a_traceback(small_run: Path, data: st.DataObject) -> None:
    real_file = (small_run / RESULTS_FILE).read_text()
    document = json.loads(real_file)
    changed: list[tuple[Any, ...]] = []
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        paths = _paths(document)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="where")
        _break(document, path, data.draw(st.sampled_from(BREAKAGES), label="how"))
        changed.append(path)
    with tempfile.TemporaryDirectory() as folder:
        broken = Path(folder) / "broken"
        original = Path(folder) / "original"
        broken.mkdir()
        original.mkdir()
        (broken / RESULTS_FILE).write_text(json.dumps(document))
        (original / RESULTS_FILE).write_text(real_file)
        for argv in (("report", str(broken)), ("compare", str(original), str(broken))):
            code, stdout, stderr = _call(*argv)
            assert code in (0, 2), (argv, stderr)
            if code == 2:  # refused: the file and the broken field named, nothing written
                assert "error:" in stderr and str(broken) in stderr, stderr
                assert _names_a_change(stderr, changed), (changed, stderr)
                assert not (broken / "summary.md").exists()
            elif argv[0] == "report":  # rendered: the tables are written and shown
                assert (broken / "summary.md").is_file() and (broken / "results.csv").is_file()
                assert "Throughput (samples/s)" in stdout and not stderr, stderr
            else:
                assert stdout.startswith("# Comparison"), stdout[:200]
