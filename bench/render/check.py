"""The install check as a table: one line per check, a hint beside every FAIL and WARN, and the verdict."""

from __future__ import annotations

from bench.env.check import FAIL, WARN, CheckReport
from bench.render.tables import render


def check_table(report: CheckReport, fmt: str = "simple") -> str:
    rows = [[line.name, line.verdict, line.detail, line.hint] for line in report.lines]
    failed = sum(line.verdict == FAIL for line in report.lines)
    warned = sum(line.verdict == WARN for line in report.lines)
    verdict = "PASS: this install works" if report.passed else f"FAIL: {failed} check(s) failed"
    if warned:
        verdict += f" ({warned} warning(s))"
    return f"{render(rows, ['check', 'result', 'details', 'what to do'], fmt)}\n\n{verdict}"
