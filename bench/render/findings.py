"""The findings of a run as text: at the top of summary.md, on the console, and `bench findings`.

One group per device and bottleneck, one line per case in it, each remedy with its measured gain,
`within noise`, why its cell was left out, or the command that would measure it.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.analysis.findings import Finding, Remedy, command, findings, untrusted
from bench.core.keys import CaseKey
from bench.core.results import Run


def fmt_gain(gain: float) -> str:
    return f"{gain:.2f}×" if gain < 10 else f"{gain:.0f}×"


def remedy_text(remedy: Remedy) -> str:
    if remedy.left_out is not None:
        return f"{remedy.what}: its cell is not evidence ({remedy.left_out})"
    if remedy.gain is None:
        return remedy.what
    if not remedy.claimed:
        return f"{remedy.what} {fmt_gain(remedy.gain)}, within noise: no gain claimed"
    return f"{remedy.what} {fmt_gain(remedy.gain)}" + (" (slower)" if remedy.gain < 1 else "")


def finding_line(finding: Finding) -> str:
    measured = [remedy_text(r) for r in finding.remedies if r.measured]
    return f"{finding.case.label()}: {finding.figure}" + (f". {'; '.join(measured)}." if measured else ".")


def unmeasured_lines(found: list[Finding], code: Callable[[str], str]) -> list[str]:
    """Each remedy the run did not measure, once for the group, with the one command that would."""
    wanted: dict[tuple[str, tuple[tuple[str, str], ...]], list[CaseKey]] = {}
    for finding in found:
        for remedy in finding.remedies:
            if remedy.flags is not None:
                wanted.setdefault((remedy.what, remedy.flags), []).append(finding.case)
    return [f"not measured: {what} ({code(command(keys, flags))})" for (what, flags), keys in wanted.items()]


def findings_lines(run: Run, markup: bool = True) -> list[str]:
    """Bulleted lines (Markdown when `markup`), grouped by device and bottleneck; empty: nothing found."""

    def code(text: str) -> str:
        return f"`{text}`" if markup else text

    groups: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings(run):
        groups.setdefault((finding.case.device, finding.bottleneck), []).append(finding)
    lines = []
    for (device, bottleneck), found in groups.items():
        lines.append(f"- {'**' if markup else ''}{device}: {bottleneck}{'**' if markup else ''}")
        lines += [f"  - {finding_line(finding)}" for finding in found]
        lines += [f"  - {line}" for line in unmeasured_lines(found, code)]
    left_out = untrusted(run)
    if left_out:
        reasons = sorted({reason for _, reason in left_out})
        lines.append(
            f"- Left out of every finding: {len(left_out)} cells whose figures are not to be trusted "
            f"({'; '.join(reasons)}); see their health column."
        )
    return lines
