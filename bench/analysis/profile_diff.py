"""Which ops' time changed most between two profiled runs of one case (`bench compare` of runs made
with `--profile`). Each op's time is its self time on the device where the profile has device time,
else on the CPU, summed over the profiled steps. Torch-free: it reads the op tables' rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

TOP_OPS = 5


@dataclass(frozen=True)
class OpChange:
    op: str
    a_us: float
    b_us: float

    @property
    def change_us(self) -> float:
        return self.b_us - self.a_us


def _times(rows: Iterable[Mapping[str, str]], column: str) -> dict[str, float]:
    times: dict[str, float] = {}
    for row in rows:
        times[row["op"]] = times.get(row["op"], 0.0) + float(row.get(column) or 0)
    return times


def op_changes(
    a_rows: Sequence[Mapping[str, str]], b_rows: Sequence[Mapping[str, str]], top: int = TOP_OPS
) -> list[OpChange]:
    """The `top` ops by the size of their change (either way); an op missing from one side took 0 there."""
    on_device = any(float(row.get("self_device_us") or 0) > 0 for row in [*a_rows, *b_rows])
    column = "self_device_us" if on_device else "self_cpu_us"
    a, b = _times(a_rows, column), _times(b_rows, column)
    changes = [OpChange(op, a.get(op, 0.0), b.get(op, 0.0)) for op in {*a, *b}]
    changes.sort(key=lambda change: (-abs(change.change_us), change.op))
    return [change for change in changes[:top] if change.change_us != 0]
