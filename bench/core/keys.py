"""A case's identity (`CaseKey`) and its one text form: label, pytest id, plot line, columns, order.

A case is one cell of the tables: model × workload × device × batch size, plus every other dimension that
changes the number. Each such dimension is declared once, in `DIMENSIONS`: its field of `CaseKey`,
its default (the chapter's choice, which a label leaves out, so older labels stay as they were),
how it reads in a label, in a pytest id, in a table column, and where it sorts. Everything that
turns a case into text (the tables, the pytest items, the plots, compare, fleet) goes through the
functions here, so a new dimension or value shows everywhere at once. Torch-free.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from bench.core.catalog import WORKLOADS
from bench.core.models import MODELS


@dataclass(frozen=True)
class CaseKey:
    """What identifies a case across runs: the cells of the tables and of `compare`.

    The dimensions after `loader` default to what the chapter does (eager mode, torch's own thread
    count, one process, the chapter's MLP), so a case that sets none of them keeps its plain label.
    """

    workload: str
    device: str
    batch_size: int
    loader: str | None = None
    mode: str = "eager"
    threads: int | None = None  # None: torch's default
    world_size: int = 1  # processes training one model together (DistributedDataParallel)
    side_by_side: int = 1  # independent single-process copies running at the same moment
    model: str = "mlp"  # bench.core.models: a built-in name or the user's `file.py:build`
    # the chapter's DataLoader's settings (its own: no workers, pageable memory); torchvision loader only
    workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = None  # None: torch's default (2 with workers)

    __pydantic_config__: ClassVar[dict[str, Any]] = {"allow_inf_nan": False, "extra": "forbid"}

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.world_size < 1 or self.side_by_side < 1:
            raise ValueError("batch_size, world_size and side_by_side are at least 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads is at least 1 (or null: torch's default)")
        if self.workers < 0 or (self.prefetch_factor is not None and self.prefetch_factor < 1):
            raise ValueError("workers is at least 0 and prefetch_factor at least 1")

    def label(self) -> str:
        return label(self)

    @property
    def processes(self) -> int:
        """Processes at once: the data-parallel ranks or the side-by-side copies."""
        return max(self.world_size, self.side_by_side)


@dataclass(frozen=True)
class Dimension:
    """A field of CaseKey beyond workload, loader, device and batch size, and how it reads."""

    field: str
    header: str  # its column's header, where a run varies it
    default: Any
    label: Callable[[Any], str]  # its part of a label (after the batch size)
    ident: Callable[[Any], str]  # its part of a pytest id
    sort_rank: int  # where it sorts among the dimensions (lower first)
    cell: Callable[[Any], str] = str  # its table cell, where a run varies it
    loader: str | None = None  # a setting of this loader only: other loaders' cells show `–`


def _threads_cell(value: Any) -> str:
    return "default" if value is None else str(value)


def _model_ident(value: Any) -> str:
    """A model's part of a pytest id: a user spec's path reduced to characters ids keep."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(value)).strip("_")


# fmt: off
DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("model", "model", "mlp", lambda v: f" · {v}", _model_ident, sort_rank=-1),
    Dimension("mode", "mode", "eager", lambda v: f" · {v}", str, sort_rank=3),
    Dimension("threads", "threads", None, lambda v: f" · {v} threads", lambda v: f"threads{v}", sort_rank=0,
              cell=_threads_cell),
    Dimension("world_size", "processes", 1, lambda v: f" · {v} processes", lambda v: f"ws{v}", sort_rank=1),
    Dimension("side_by_side", "side by side", 1, lambda v: f" · {v} copies side by side", lambda v: f"sbs{v}",
              sort_rank=2),
    Dimension("workers", "workers", 0, lambda v: f" · {v} workers", lambda v: f"w{v}", sort_rank=4,
              loader="torchvision"),
    Dimension("pin_memory", "pin memory", False, lambda v: " · pinned", lambda v: "pin", sort_rank=5,
              cell=lambda v: "on" if v else "off", loader="torchvision"),
    Dimension("persistent_workers", "persistent workers", False, lambda v: " · persistent", lambda v: "persist",
              sort_rank=6, cell=lambda v: "on" if v else "off", loader="torchvision"),
    Dimension("prefetch_factor", "prefetch", None, lambda v: f" · prefetch {v}", lambda v: f"pf{v}", sort_rank=7,
              cell=lambda v: "default" if v is None else str(v), loader="torchvision"),
)
# fmt: on
assert {d.field for d in DIMENSIONS} | {"workload", "device", "batch_size", "loader"} == {
    f.name for f in fields(CaseKey)
}, "every field of CaseKey beyond the first four is declared in DIMENSIONS"


def _set(key: CaseKey) -> list[Dimension]:
    """The dimensions whose value in `key` is not the default."""
    return [d for d in DIMENSIONS if getattr(key, d.field) != d.default]


def _loader(key: CaseKey) -> str:
    return f" [{key.loader}]" if key.loader else ""


def label(key: CaseKey) -> str:
    """`train_step [resident] · cpu · batch 64 · compile`: what people read, in every table and message."""
    extra = "".join(d.label(getattr(key, d.field)) for d in _set(key))
    return f"{key.workload}{_loader(key)} · {key.device} · batch {key.batch_size}{extra}"


def item_id(key: CaseKey, pass_index: int) -> str:
    """`train_step-step-cpu-64-compile-pass1`: the pytest item of one case in one pass."""
    parts = [key.workload, key.loader or "step", key.device, str(key.batch_size)]
    parts += [d.ident(getattr(key, d.field)) for d in _set(key)]
    return "-".join([*parts, f"pass{pass_index + 1}"])


def line_label(key: CaseKey, with_workload: bool = False) -> str:
    """`cpu [resident] · compile`: a plot line within a panel of one workload (or across workloads)."""
    start = f"{key.workload} · {key.device}" if with_workload else key.device
    return start + _loader(key) + "".join(d.label(getattr(key, d.field)) for d in _set(key))


def variant(key: CaseKey) -> str:
    """`compile · 2 threads`: the dimensions a case sets apart from their defaults, or `–`."""
    return " · ".join(d.label(getattr(key, d.field)).removeprefix(" · ") for d in _set(key)) or "–"


def varied(keys: Iterable[CaseKey]) -> list[Dimension]:
    """The dimensions some case of these sets apart from its default: they get a column."""
    keys = list(keys)
    return [d for d in DIMENSIONS if any(getattr(k, d.field) != d.default for k in keys)]


def dimension_cells(key: CaseKey, shown: Sequence[Dimension]) -> list[str]:
    """The cells of the varied dimensions' columns for one case."""
    return [d.cell(getattr(key, d.field)) if d.loader in (None, key.loader) else "–" for d in shown]


def dimension_headers(shown: Sequence[Dimension]) -> list[str]:
    return [d.header for d in shown]


def without_device(key: CaseKey) -> tuple[Any, ...]:
    """A case's identity across machines (fleet rows): every field but the device."""
    return tuple(getattr(key, f.name) for f in fields(CaseKey) if f.name != "device")


def ordered(values: Iterable[Any], order: Sequence[Any] = ()) -> list[Any]:
    """Unique values, those in `order` first and in its order, the rest by their text."""
    unique = list(dict.fromkeys(values))
    return sorted(unique, key=lambda v: (order.index(v) if v in order else len(order), str(v)))


def sort_key(devices: Sequence[str], modes: Sequence[str]) -> Callable[[CaseKey], tuple[Any, ...]]:
    """The order of rows: workload (table order), loader, device (`devices` order), the dimensions by
    their rank (modes in `modes` order), batch size."""
    ranked = sorted(DIMENSIONS, key=lambda d: d.sort_rank)

    def position(dimension: Dimension, value: Any) -> Any:
        if dimension.field == "mode":
            return modes.index(value) if value in modes else len(modes)
        if dimension.field == "model":  # the models table's order, the user's own after them
            return (MODELS.index(value), "") if value in MODELS else (len(MODELS), value)
        return value if value is not None else 0

    return lambda key: (
        WORKLOADS.index(key.workload) if key.workload in WORKLOADS else len(WORKLOADS),
        key.loader or "",
        devices.index(key.device) if key.device in devices else len(devices),
        *(position(d, getattr(key, d.field)) for d in ranked),
        key.batch_size,
    )
