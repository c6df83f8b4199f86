"""A results file "from another machine", crafted to inject markup into the reports people read on web
pages (issue 23, item 5): a host name holding an image tag, a command line with newlines and pipes,
a container image with a fake heading, a case error with a script tag. Rendered by real `bench
report` processes (one run, and a fleet), none of it may become markup, and the tables keep their
columns.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench.render.escape import code_span, markdown, plain
from tests.conftest import reference_copy, run_cli

HOSTILE_HOST = '<img src="https://tracker.example/p.gif">'
HOSTILE_COMMAND = "bench run --out x\n# Fake heading\n| a | b |\n[click](https://evil.example) `code`"
HOSTILE_IMAGE = "torch-bench\n## Injected section <script>alert(1)</script>"
HOSTILE_ERROR = "boom | <b>bold</b>\n# heading in an error"


def crafted_run(tmp_path: Path) -> Path:
    folder = reference_copy(tmp_path)
    data = json.loads((folder / "results.json").read_text())
    data["env"]["host"] = HOSTILE_HOST
    data["env"].setdefault("container", {})["image"] = HOSTILE_IMAGE
    data["env"]["command_line"] = HOSTILE_COMMAND  # a version 2 file keeps it there
    data["run_id"] = "x|y<z>"
    first = data["cases"][0]
    first["status"], first["error"] = "error", HOSTILE_ERROR
    (folder / "results.json").write_text(json.dumps(data))
    return folder


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def assert_no_markup(text: str) -> None:
    outside = re.sub(r"`[^`\n]*`", "", text)  # a code span shows its text as it is: no markup inside
    assert "<img" not in outside and "<script" not in outside and "<b>" not in outside, text[:3000]
    assert "[click](" not in outside
    for line in text.splitlines():
        assert not line.startswith(("# Fake", "## Injected", "# heading")), line
        assert not line.startswith("| a | b |")
    for table in re.findall(r"(?:^\|.*\n)+", text, flags=re.M):  # every row as many cells as its header
        rows = table.splitlines()
        assert {unescaped_pipes(row) for row in rows} == {unescaped_pipes(rows[0])}, table[:2000]


def test_a_crafted_run_renders_no_markup_in_summary_md(tmp_path: Path) -> None:
    folder = crafted_run(tmp_path)
    result = run_cli("report", str(folder))
    assert result.returncode == 0, result.output
    summary = (folder / "summary.md").read_text()
    assert_no_markup(summary)
    assert (
        "torch-bench ## Injected section &lt;script&gt;alert(1)&lt;/script&gt;" in summary
    )  # shown, as text
    assert "bench run --out x # Fake heading | a | b | [click](https://evil.example) 'code'" in summary
    assert "\x1b" not in result.stdout and "# Fake heading" not in result.stdout.splitlines()


def test_a_crafted_run_in_a_fleet_renders_no_markup_and_a_repeat_is_warned(tmp_path: Path) -> None:
    crafted = crafted_run(tmp_path)
    out = tmp_path / "fleet"
    result = run_cli("report", str(crafted), str(crafted), "--out", str(out))
    assert result.returncode == 0, result.output
    fleet = (out / "fleet.md").read_text()
    assert_no_markup(fleet)
    assert "is given 2 times: its columns are one run, repeated" in fleet
    assert '&lt;img src="https://tracker.example/p.gif"&gt;' in fleet  # the column names the host
    assert "is given 2 times" in result.stdout


def test_compare_with_a_crafted_run_renders_no_markup(tmp_path: Path) -> None:
    crafted = crafted_run(tmp_path)
    out = tmp_path / "compare.md"
    result = run_cli("compare", str(crafted), str(crafted), "--out", str(out))
    assert result.returncode == 0, result.output
    assert_no_markup(out.read_text())


def test_the_escapes() -> None:
    assert markdown("a|b<c>&[d](e)`f`\\\n# g") == "a\\|b&lt;c&gt;&amp;\\[d\\](e)\\`f\\`\\\\ # g"
    assert code_span("run `x`\n| y") == "run 'x' | y"
    assert plain("ok\x1b[31mred\r\nnext\u2028") == "ok [31mred  next "
    assert (
        markdown("cuda:0 · torch 2.14.1+cu130 (x86_64)") == "cuda:0 · torch 2.14.1+cu130 (x86_64)"
    )  # plain text untouched
