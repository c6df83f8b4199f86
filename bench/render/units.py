"""Numbers for people: three significant digits and a unit that fits, `–` for what is not known."""

from __future__ import annotations

import math

from bench.core.catalog import MIB
from bench.core.units import fmt_flops as fmt_flops
from bench.core.units import fmt_rate as fmt_rate


def fmt_seconds(value: float | None) -> str:
    """Three significant digits in a unit that fits: `41 ns`, `8.2 µs`, `0.152 ms`... `15.4 s`."""
    if value is None or not math.isfinite(value):
        return "–"
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-4:
        return f"{value * 1e3:.3g} ms"
    if value >= 1e-7:
        return f"{value * 1e6:.3g} µs"
    return f"{value * 1e9:.3g} ns"


def fmt_mib(value: int | None) -> str:
    return "–" if value is None else f"{value / MIB:,.1f}"


def fmt_percent(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value * 100:.1f}%"


def fmt_bandwidth(value: float | None) -> str:
    """Bytes per second in GB/s (10^9, as nccl-tests prints them), three significant digits."""
    return "–" if value is None or not math.isfinite(value) else f"{value / 1e9:.3g} GB/s"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def shorten(text: str | None, width: int = 80) -> str:
    """One line of at most `width` characters (an ellipsis where it was cut)."""
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"
