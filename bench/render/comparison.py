"""`bench compare`'s report as Markdown: the floor it used, what differs between the runs, and per
case B's time against A's with its interval, the change it could have seen and the verdict."""

from __future__ import annotations

import math

from bench.analysis.compare import (
    BLIND_ABOVE,
    FAMILY_CONFIDENCE,
    FASTER,
    SAME,
    SLOWER,
    WANTED_DETECTABLE,
    Comparison,
    ComparisonRow,
)
from bench.analysis.profile_diff import OpChange
from bench.render.escape import markdown_safe
from bench.render.tables import render
from bench.render.units import fmt_seconds


def comparison_markdown(comparison: Comparison) -> str:
    comparison = markdown_safe(comparison)  # the runs' strings and the warnings quoting them, escaped
    a, b = comparison.a, comparison.b
    parts = [
        f"# Comparison: B ({b.run_id}) against A ({a.run_id})",
        "",
        f"A: `{a.command_line or '?'}` — {a.created}  ",
        f"B: `{b.command_line or '?'}` — {b.created}",
        "",
    ]
    noise_a, noise_b = comparison.noise
    parts += [
        f"Noise level (median spread of the cells): A {_percent(noise_a)}, B {_percent(noise_b)}; time B/A "
        f"between {1 / (1 + comparison.min_effect):.3f} and {1 + comparison.min_effect:.3f} (a floor of "
        f"{comparison.min_effect:.1%}: {comparison.asked_min_effect * 100:g}% (--min-effect), or the larger noise "
        "level, either way) is not called a change.",
        "",
    ]
    if comparison.warnings:
        parts += ["**Warning: the runs differ in ways that can explain changes:**", ""]
        parts += [f"- {line}" for line in comparison.warnings]
        parts.append("")
    rows = []
    for row in comparison.rows:
        estimate = row.estimate
        interval = f"{estimate.low:.3f}–{estimate.high:.3f}" if estimate and estimate.testable else "–"
        rows.append(
            [
                row.key.label(),
                fmt_seconds(row.a.median_s) if row.a and row.a.ok else "",
                fmt_seconds(row.b.median_s) if row.b and row.b.ok else "",
                f"{estimate.ratio:.3f}" if estimate else "",
                interval,
                f"{row.change_percent:+.1f}%" if estimate else "",
                _detectable_cell(row),
                row.verdict,
            ]
        )
    headers = ["case", "A median", "B median", "time B/A", "interval", "change", "detectable", "verdict"]
    parts.append(render(rows, headers, "github"))
    counts = {
        verdict: sum(row.verdict == verdict for row in comparison.rows) for verdict in (SLOWER, FASTER, SAME)
    }
    parts += [
        "",
        f"{counts[SLOWER]} slower, {counts[FASTER]} faster, {counts[SAME]} without significant change. "
        "time B/A > 1 means B is slower (ratio of geometric means over passes or epochs). Intervals: "
        f"Welch's t on log times, {comparison.case_confidence:.2%} each so that all hold together at "
        f"{FAMILY_CONFIDENCE:.0%}. A verdict needs the interval to exclude 1 and B/A outside "
        f"{1 / (1 + comparison.min_effect):.3f}–{1 + comparison.min_effect:.3f}. `detectable`: the "
        "smallest slowdown this case could have called with its units (passes or training runs), their "
        "noise, the correction and the floor.",
    ]
    blind = [row for row in comparison.rows if row.detectable is not None and row.detectable > BLIND_ABOVE]
    if blind:
        parts += ["", f"Cases that could not have seen a change of {BLIND_ABOVE:g}x:", ""]
        for row in blind:
            advice = (
                f"about {row.passes_needed} passes per run (--passes {row.passes_needed}) would bring it under "
                f"{WANTED_DETECTABLE - 1:.0%}"
                if row.passes_needed
                else f"no practical number of passes brings it under {WANTED_DETECTABLE - 1:.0%} at this noise"
            )
            parts.append(f"- {row.key.label()}: detectable {row.detectable:.2f}x; {advice}")
    return "\n".join(parts)


def _detectable_cell(row: ComparisonRow) -> str:
    if row.detectable is None:
        return ""
    return f"{row.detectable:.2f}x" if math.isfinite(row.detectable) else "never"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def op_changes_markdown(changes: dict[str, list[OpChange]]) -> str:
    """Per profiled case, the ops whose time changed most between A and B (empty: none profiled)."""
    if not changes:
        return ""
    parts = ["## Ops whose time changed most (both runs made with --profile)", ""]
    for label, rows in changes.items():
        table = [[row.op, fmt_seconds(row.a_us / 1e6), fmt_seconds(row.b_us / 1e6),
                  f"{row.change_us / 1e3:+.3g} ms"] for row in rows]  # fmt: skip
        parts += [f"{label} (self time over the profiled steps):", ""]
        parts += [render(table, ["op", "A", "B", "B − A"], "github") if table else "no op changed", ""]
    return "\n".join(parts)
