"""Rates for people, shared by the tables (`bench.render.units`) and the install check's probes:
three significant digits and the unit that fits."""

from __future__ import annotations

import math

RATE_SCALES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
FLOPS_SCALES = ((1e15, "P"), *RATE_SCALES)


def _scaled(value: float, scales: tuple[tuple[float, str], ...]) -> tuple[str, str]:
    """(three significant digits, prefix): the largest prefix whose number stays at 1 or more, moved up
    when rounding reaches 1000 (999.96k is `1M`, not `1e+03k`)."""
    for index, (scale, prefix) in enumerate(scales):
        if value >= scale:
            number = f"{value / scale:.3g}"
            if float(number) >= 1000 and index > 0:
                return f"{value / scales[index - 1][0]:.3g}", scales[index - 1][1]
            return number, prefix
    return f"{value:.3g}", ""


def fmt_rate(value: float | None) -> str:
    """Samples per second with three significant digits and k/M: `1.23M`, `45.6k`, `789`."""
    if value is None or not math.isfinite(value):
        return "–"
    number, prefix = _scaled(value, RATE_SCALES)
    return f"{number}{prefix}"


def fmt_flops(value: float | None) -> str:
    """`110 GFLOP/s`, `61.2 TFLOP/s`, `410 TFLOP/s` (a GPU's peak, never `410,000 GFLOP/s`)."""
    if value is None or not math.isfinite(value):
        return "–"
    number, prefix = _scaled(value, FLOPS_SCALES)
    return f"{number} {prefix}FLOP/s"
