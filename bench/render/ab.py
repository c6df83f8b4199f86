"""`bench ab`'s text: a console line per block with the running interval per case, and ab.md.

Reads only what `bench.engine.ab` recorded and `bench.analysis.ab` judged; measures nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from bench.analysis.ab import (
    LOOK_CONFIDENCE,
    MIN_PAIRS,
    SIDES,
    Block,
    CaseVerdict,
    case_confidence,
    counted_pairs,
    same_verdict,
)
from bench.render.tables import render
from bench.render.units import fmt_seconds

AB_MD, AB_JSON = "ab.md", "ab.json"


def bound_text(value: float) -> str:
    return f"{value:.3f}" if 0.001 <= value < 1000 else f"{value:.1e}"


def interval_text(row: CaseVerdict) -> str:
    """`0.952–1.043`; `–` below three pairs (with one degree of freedom the interval says nothing)."""
    if row.low is None or row.high is None or row.pairs < 3:
        return "–"
    return f"{bound_text(row.low)}–{bound_text(row.high)}"


def ratio_text(row: CaseVerdict) -> str:
    return "" if row.ratio is None else f"{row.ratio:.3f}"


def block_line(block: Block, measured_s: float, budget_s: float) -> str:
    """`block 3 (B): 4.1 s measured (19 s in all); 12 of 120 s spent`."""
    role = "warm-up, not counted" if block.warmup else "counted"
    failed = [case.label for case in block.cases if case.status != "ok"]
    contended = [case.label for case in block.cases if case.contended]
    notes = (f"; not ok: {', '.join(failed)}" if failed else "") + (
        f"; contended: {', '.join(contended)}" if contended else ""
    )
    return (
        f"block {block.index} ({block.side}, {role}): {block.measured_s:.0f} s measured ({block.wall_s:.0f} s "
        f"with start-up); {measured_s:.0f} of {budget_s:g} s spent{notes}"
    )


def verdict_lines(verdicts: Sequence[CaseVerdict]) -> list[str]:
    """The running interval per case, after a pair."""
    return [
        f"    {row.label}: B/A {ratio_text(row) or '?'} [{interval_text(row)}] over {row.pairs} pairs"
        + (f" ({row.dropped} left out)" if row.dropped else "")
        + f": {row.verdict}"
        for row in verdicts
    ]


def side_lines(record: Mapping[str, Any]) -> list[str]:
    lines = []
    for name in SIDES:
        side = record["sides"][name]
        env = " ".join(f"{key}={value}" for key, value in side["env"].items()) or "none"
        args = shlex.join(side["args"]) or "none"
        lines.append(
            f"- **{name}**: `{side['python']}` — torch {side['torch']}, torchvision {side['torchvision']}, "
            f"Python {side['python_version']}; options: `{args}`; variables: `{env}`"
        )
    return lines


def ab_markdown(record: Mapping[str, Any], verdicts: Sequence[CaseVerdict], blocks: Sequence[Block]) -> str:
    """ab.md: the sides, how the blocks ran and stopped, and per case B/A with its interval and verdict."""
    options = record["options"]
    pairs = len(counted_pairs(blocks))
    warmups = sum(block.warmup for block in blocks)
    resolution = options["resolution"]
    parts = [
        f"# A/B: {'A against itself' if record.get('aa') else 'B against A'}",
        "",
        f"Command: `{record['command_line']}` — {record['created']}",
        "",
        *side_lines(record),
        f"- shared `bench run` options: `{shlex.join(record['shared_args']) or 'none'}`",
        "",
        f"{len(blocks)} blocks ({warmups} warm-up, not counted; {pairs} pair{'' if pairs == 1 else 's'} counted, {options['order'].upper()} "
        f"order), {record['measured_s']:.0f} s measuring of a {options['budget_s']:g} s budget "
        f"({record['wall_s']:.0f} s with each block's start-up). Stopped: **{record['stopped']}**.",
        "",
    ]
    rows = [
        [
            row.label,
            fmt_seconds(row.median_a_s) if row.median_a_s else "",
            fmt_seconds(row.median_b_s) if row.median_b_s else "",
            str(row.pairs) + (f" (+{row.dropped} left out)" if row.dropped else ""),
            ratio_text(row),
            interval_text(row),
            f"{(row.ratio - 1) * 100:+.1f}%" if row.ratio is not None else "",
            row.verdict,
        ]
        for row in verdicts
    ]
    headers = ["case", "A median", "B median", "pairs", "time B/A", "interval", "change", "verdict"]
    parts.append(render(rows, headers, "github"))
    parts += [
        "",
        "time B/A > 1 means B is slower: the geometric mean over the pairs of B's block median over A's, each "
        "pair two adjacent blocks, so the machine's drift between minutes divides out. Interval: Student's t "
        f"on the log ratios, {case_confidence(len(verdicts)):.2%} per case so that all hold together at "
        f"{LOOK_CONFIDENCE:.0%} at each look (the rule looks after every pair). Verdict at the resolution "
        f"{resolution:.0%}: `{same_verdict(resolution)}` when the whole interval lies within "
        f"{1 / (1 + resolution):.3f}–{1 + resolution:.3f}, `B slower`/`B faster` when it lies above/below 1, "
        f"else `undecided`; none before {MIN_PAIRS} pairs. A pair is left out of a case when either block "
        "failed it"
        + (
            " (contended blocks counted: --use-contended)."
            if options["use_contended"]
            else " or was contended."
        )
        + " Each block's raw samples are in its folder under blocks/; a/ and b/ hold each side's counted "
        "blocks merged as one run (one pass per block) for `bench report` and `bench compare`.",
    ]
    return "\n".join(parts)


def console_table(verdicts: Sequence[CaseVerdict]) -> str:
    rows = [[row.label, str(row.pairs), ratio_text(row), interval_text(row), row.verdict] for row in verdicts]
    return render(rows, ["case", "pairs", "time B/A", "interval", "verdict"], "simple")
