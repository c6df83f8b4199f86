"""Parsing the values of comma-separated and numeric options; each bad value a UsageError saying what to give."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.core.errors import UsageError


def finite_float(text: str) -> float:
    """argparse's `type` for every float option: a number, never NaN or ±infinity (exit 2, with usage).

    `float()` takes "nan", "inf" and "-inf"; a NaN threshold compares false with everything, so
    `compare --fail-above nan` would switch the regression gate off without a word.
    """
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number (NaN and infinity are refused)")
    return number


REDACT_HELP = (
    "replace the host name, user names, home paths, other processes' names, the git identity and GPU/MIG "
    "UUIDs with salted hashes (salt: $BENCH_REDACT_SALT or ~/.config/torch-bench/redact-salt); no figure "
    "changes (default: off)"
)


# the most of each count a run takes: beyond them a run is hours long, or its schedule alone fills memory
MAX_COUNTS = {"passes": 100, "epoch_repeats": 100, "train_runs": 100, "epochs": 1000}
MAX_NPROC = 256
FAR_ABOVE = 4  # threads or processes above 4x the usable CPUs: refused (unless --oversubscribe)


def check_counts(values: dict[str, object]) -> None:
    """Every count at least 1 and at most its MAX_COUNTS."""
    for name, limit in MAX_COUNTS.items():
        value = values[name]
        assert isinstance(value, int)
        if value < 1:
            raise UsageError(f"--{name.replace('_', '-')} {value} must be at least 1")
        if value > limit:
            raise UsageError(f"--{name.replace('_', '-')} {value} must be at most {limit}")


def cpu_share_warnings(
    threads: Sequence[int | None], nproc: int, on_cpu: bool, cpus: int, allowed: bool
) -> list[str]:
    """Threads (times processes) against the usable CPUs: a warning above them (the cells are marked
    `oversubscribed`), refused far above them or with more processes than CPUs, unless `allowed`."""
    if not on_cpu:
        return []
    if not 1 <= nproc <= MAX_NPROC:
        raise UsageError(f"--nproc {nproc} must be between 1 and {MAX_NPROC}")
    if nproc > cpus and not allowed:
        raise UsageError(
            f"--nproc {nproc} on the CPU is more processes than the {cpus} usable CPUs",
            hint="each would wait for the others; --oversubscribe runs it anyway (its cells marked oversubscribed)",
        )
    most = max((count or 1) for count in threads) * nproc
    if most > FAR_ABOVE * cpus and not allowed:
        raise UsageError(
            f"--threads {max(count or 1 for count in threads)} is far above the {cpus} usable CPUs",
            hint="--threads sweep tries 1, 2, 4, ... up to them; --oversubscribe runs it anyway",
        )
    if most > cpus:
        return [
            f"{most} threads on {cpus} usable CPUs: they wait for each other; the cells are marked oversubscribed"
        ]
    return []


def folder_path(text: str) -> Path:
    """argparse's `type` for a folder to write: `--out ""` would write into the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "an empty name is not a folder (leave the option out for the default)"
        )
    if "\x00" in text:
        raise argparse.ArgumentTypeError("a folder name cannot hold a NUL character")
    return Path(text)


def comma_list(text: str, option: str, example: str) -> list[str]:
    """The entries of a comma-separated option; an empty list is a UsageError, never "the default"."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError(f"{option} is empty", hint=f"give one or more values, e.g. {option} {example}")
    return items


def parse_counts(text: str, option: str, what: str, example: str) -> tuple[int, ...]:
    """`16,64` -> (16, 64): positive whole numbers, in the order given, without repeats."""
    counts: list[int] = []
    for item in comma_list(text, option, example):
        try:
            count = int(item)
        except ValueError:
            raise UsageError(
                f"{what} {item!r} is not a whole number", hint=f"e.g. {option} {example}"
            ) from None
        if count < 1:
            raise UsageError(f"{what} {count} must be at least 1", hint=f"e.g. {option} {example}")
        if count not in counts:
            counts.append(count)
    return tuple(counts)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    return parse_counts(text, "--batch-sizes", "batch size", "16,64,256")


def parse_choices(text: str, valid: Sequence[str], option: str, what: str) -> tuple[str, ...]:
    items = comma_list(text, option, ",".join(valid[:2]))
    if items == ["all"]:
        return tuple(valid)
    unknown = [item for item in items if item not in valid]
    if unknown:
        shown = ", ".join(repr(item) for item in unknown)
        raise UsageError(f"unknown {what} {shown}", hint=f"choose from: {', '.join(valid)} (or all)")
    return tuple(dict.fromkeys(items))


def whole_usable_cpus() -> int:
    """Whole CPUs this process may use (at least one): what thread counts are divided from."""
    from bench.env.collect import usable_cpus

    return max(1, int(usable_cpus()))


def parse_threads(text: str) -> tuple[int | None, ...]:
    """`1,2` -> (1, 2); `sweep` -> 1, 2, 4, ... up to the usable CPUs (and that count itself)."""
    if text.strip() == "sweep":
        cpus = whole_usable_cpus()
        counts = [2**i for i in range(cpus.bit_length()) if 2**i <= cpus]
        return tuple(dict.fromkeys([*counts, cpus]))
    return parse_counts(text, "--threads", "thread count", "1,2 or sweep")


def parse_loader_workers(text: str) -> tuple[int, ...]:
    """`0,1,2` -> (0, 1, 2): DataLoader worker counts, capped at the usable CPUs (a count above them
    only adds processes that wait for a CPU; it is dropped, and said)."""
    counts: list[int] = []
    for item in comma_list(text, "--loader-workers", "0,2"):
        if not item.isdigit():
            raise UsageError(
                f"worker count {item!r} is not a whole number of 0 or more", hint="e.g. --loader-workers 0,2"
            )
        if int(item) not in counts:
            counts.append(int(item))
    cpus = whole_usable_cpus()
    kept = [count for count in counts if count <= cpus]
    dropped = [count for count in counts if count > cpus]
    if dropped:
        print(f"note: --loader-workers {','.join(map(str, dropped))} left out: this process may use {cpus} CPUs",
              file=sys.stderr)  # fmt: skip
    if not kept:
        raise UsageError(
            f"--loader-workers {text}: every count is above the {cpus} usable CPUs", hint="e.g. 0,1"
        )
    return tuple(kept)


def parse_switches(text: str, option: str) -> tuple[bool, ...]:
    """`off,on` -> (False, True)."""
    values = {"off": False, "on": True}
    items = comma_list(text, option, "off,on")
    unknown = [item for item in items if item not in values]
    if unknown:
        raise UsageError(
            f"{option} takes off and/or on, not {', '.join(map(repr, unknown))}", hint=f"{option} off,on"
        )
    return tuple(dict.fromkeys(values[item] for item in items))
