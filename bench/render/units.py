"""Numbers for people: three significant digits and a unit that fits, `–` for what is not known."""

from __future__ import annotations

import math

from bench.core.catalog import MIB


def fmt_rate(value: float | None) -> str:
    """Samples per second with three significant digits and k/M: `1.23M`, `45.6k`, `789`."""
    if value is None or not math.isfinite(value):
        return "–"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


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


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def fmt_flops(value: float | None) -> str:
    """`110 GFLOP/s`, `61.2 TFLOP/s`."""
    text = fmt_rate(value)
    if text == "–":
        return text
    number, unit = (text[:-1], text[-1]) if text[-1] in "kMGT" else (text, "")
    return f"{number} {unit}FLOP/s"


def shorten(text: str | None, width: int = 80) -> str:
    """One line of at most `width` characters (an ellipsis where it was cut)."""
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"
