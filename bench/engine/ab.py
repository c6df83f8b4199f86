"""`bench ab`: runs the blocks of two sides, interleaved, each a fresh `bench run` process, until stopped.

A side is an interpreter, extra `bench run` options and environment variables. Before anything is
measured each side is probed in its own interpreter and environment (`bench.cli.ab_probe`: torch
and torchvision import, the options parse, the variables are valid, the plan is known), so a side
that cannot run is one line naming it (exit 2). Then the blocks: one warm-up per side (not counted:
it fills the inductor cache and the page cache), then pairs in ABBA order (or each pair's order
drawn at random), each block `<python> -m bench run <shared options> <side options> --passes 1 --out
<folder>/blocks/NN-S`, with the side's variables, the same CPUs (`os.sched_setaffinity`) and an
inductor cache per side. After every pair the verdicts are judged again (`bench.analysis.ab`), and
the blocks stop when every case is decided, the budget of measuring seconds is spent, or the pair
limit is reached. The engine never renders: `on_pair` is told after every block.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from random import Random
from typing import Any

import bench
from bench.analysis.ab import (
    INTERRUPTED,
    SIDES,
    Block,
    BlockCase,
    CaseVerdict,
    counted_pairs,
    judge,
    pair_order,
    stop_reason,
)
from bench.core.errors import RunFailure, UsageError
from bench.core.results import CaseResult, Run
from bench.core.schema import load_run
from bench.core.store import RESULTS_FILE

PROBE_TIMEOUT_S = 600
FORBIDDEN_ARGS = ("--out", "--passes", "--resume", "--plot")  # bench ab sets or refuses these per block


@dataclass(frozen=True)
class Side:
    """One side of the comparison: its interpreter, its extra `bench run` options, its variables."""

    name: str
    python: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Probe:
    """What a side's interpreter said about itself and its plan, before anything was measured."""

    python: str
    python_version: str
    torch: str
    torchvision: str
    cases: list[str]
    torch_facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ABRequest:
    sides: tuple[Side, Side]
    shared: tuple[str, ...]
    folder: Path
    budget_s: float = 120.0
    resolution: float = 0.05
    order: str = "abba"
    seed: int = 0
    warmup: int = 1  # warm-up blocks per side
    max_pairs: int | None = None
    use_contended: bool = False


@dataclass
class ABState:
    """Everything so far: the probes, the blocks, the verdicts, why it stopped."""

    request: ABRequest
    probes: dict[str, Probe]
    cpus: list[int] | None
    blocks: list[Block] = field(default_factory=list)
    verdicts: list[CaseVerdict] = field(default_factory=list)
    stopped: str | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def measured_s(self) -> float:
        """Seconds the counted blocks measured: what the budget counts (warm-ups and start-ups are extra)."""
        return sum(block.measured_s for block in self.blocks if not block.warmup)

    @property
    def wall_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def pairs(self) -> int:
        return len(counted_pairs(self.blocks))

    def record(self, command_line: str, created: str, aa: bool) -> dict[str, Any]:
        """ab.json: both sides (interpreter, torch build and flags, options, variables), every block with
        its raw samples, the verdicts, and why the blocks stopped."""
        request = self.request
        return {
            "kind": "bench-ab",
            "version": 1,
            "command_line": command_line,
            "created": created,
            "aa": aa,
            "cpus": self.cpus,
            "shared_args": list(request.shared),
            "sides": {
                side.name: {
                    "python": side.python,
                    "args": list(side.args),
                    "env": side.env,
                    "executable": self.probes[side.name].python,
                    "python_version": self.probes[side.name].python_version,
                    "torch": self.probes[side.name].torch,
                    "torchvision": self.probes[side.name].torchvision,
                    "torch_facts": self.probes[side.name].torch_facts,
                    "cases": self.probes[side.name].cases,
                }
                for side in request.sides
            },
            "options": {
                "budget_s": request.budget_s,
                "resolution": request.resolution,
                "order": request.order,
                "seed": request.seed,
                "warmup": request.warmup,
                "max_pairs": request.max_pairs,
                "use_contended": request.use_contended,
            },
            "stopped": self.stopped or "running",
            "measured_s": self.measured_s,
            "wall_s": self.wall_s,
            "blocks": [asdict(block) for block in self.blocks],
            "verdicts": [asdict(row) for row in self.verdicts],
        }


def refused_args(args: Sequence[str]) -> list[str]:
    """The options `bench ab` sets per block itself (or that make no sense per block), where given."""
    return [arg for arg in args if arg.split("=", 1)[0] in FORBIDDEN_ARGS]


def harness_root() -> str:
    """The folder holding this `bench` package: every side runs this harness, whatever its interpreter."""
    return str(Path(bench.__file__).resolve().parent.parent)


def side_environ(side: Side, folder: Path) -> dict[str, str]:
    """The process environment of a side's blocks: ours, this harness first on the path, an inductor
    cache of its own (unless the side names one), and the side's variables last."""
    environ = dict(os.environ)
    environ.pop("BENCH_COMMAND_LINE", None)
    inherited = environ.pop("PYTHONPATH", "")  # passed through, not interpreted
    environ["PYTHONPATH"] = os.pathsep.join(part for part in (harness_root(), inherited) if part)
    environ["TORCHINDUCTOR_CACHE_DIR"] = str((folder / f"inductor-cache-{side.name.lower()}").resolve())
    environ.update(side.env)
    return environ


def current_cpus() -> list[int] | None:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def pinned(cpus: list[int] | None) -> Callable[[], None] | None:
    """The child's first act: the same CPUs as every other block (where the platform can pin)."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def probe_both(sides: Sequence[Side], shared: Sequence[str], folder: Path) -> dict[str, Probe]:
    """Both sides' probes, at the same time (each is a start-up of torch); the first failing side raises."""
    with ThreadPoolExecutor(max_workers=len(sides)) as pool:
        futures = {side.name: pool.submit(probe, side, shared, folder) for side in sides}
        return {name: future.result() for name, future in futures.items()}


def probe(side: Side, shared: Sequence[str], folder: Path) -> Probe:
    """Asks the side's interpreter whether it can run these options; a UsageError naming the side if not."""
    name = f"side {side.name} ({side.python})"
    refused = refused_args(side.args)
    if refused:
        raise UsageError(f"{name}: {', '.join(refused)} cannot be given: bench ab sets them for each block")
    command = [side.python, "-m", "bench.cli.ab_probe", *shared, *side.args]
    try:
        done = subprocess.run(
            command,
            env=side_environ(side, folder),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise UsageError(
            f"{name}: no such interpreter", hint="give --a-python/--b-python a Python executable"
        ) from None
    except PermissionError:
        raise UsageError(f"{name}: the interpreter cannot be executed") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"{name}: the probe did not answer within {PROBE_TIMEOUT_S} s") from None
    answer = _last_json(done.stdout)
    if answer is None:
        tail = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise UsageError(f"{name}: cannot run the harness: {tail[-1] if tail else f'exit {done.returncode}'}")
    if not answer.get("ok"):
        raise UsageError(f"{name}: {answer.get('error', 'the probe failed')}", hint=answer.get("hint"))
    return Probe(
        python=str(answer["executable"]),
        python_version=str(answer["python"]),
        torch=str(answer["torch"]),
        torchvision=str(answer["torchvision"]),
        cases=[str(label) for label in answer["cases"]],
        torch_facts=dict(answer.get("torch_facts") or {}),
    )


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def block_command(side: Side, shared: Sequence[str], folder: Path) -> list[str]:
    return [side.python, "-m", "bench", "run", *shared, *side.args, "--passes", "1", "--out", str(folder)]


def measured_seconds(run: Run, wall_s: float) -> float:
    """The block's time after start-up: from the run's start (facts collected, data loaded) to its end."""
    try:
        start = datetime.fromisoformat(run.created)
        end = datetime.fromisoformat(run.finished) if run.finished else None
    except ValueError:
        return wall_s
    return wall_s if end is None else min(wall_s, max(0.0, (end - start).total_seconds()))


def block_cases(run: Run) -> list[BlockCase]:
    return [
        BlockCase(
            label=case.key.label(),
            status=str(case.status.value),
            median_s=case.median_s if case.ok else None,
            samples_s=list(case.samples_s),
            contended=case.contended,
        )
        for case in run.cases
    ]


def run_block(state: ABState, side: Side, warmup: bool) -> Block:
    """One fresh `bench run` of one side; its output goes to the block folder's log."""
    index = len(state.blocks)
    folder = state.request.folder / "blocks" / f"{index:02d}-{side.name}{'-warmup' if warmup else ''}"
    folder.mkdir(parents=True, exist_ok=True)
    command = block_command(side, state.request.shared, folder)
    started = time.monotonic()
    with open(folder / "block.log", "w", encoding="utf-8") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(
            command,
            env=side_environ(side, state.request.folder),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pinned(state.cpus),
        )
        try:
            code = process.wait()
        except KeyboardInterrupt:  # the child got the same Ctrl-C: let it save what it has
            process.wait(timeout=60)
            raise
    wall_s = time.monotonic() - started
    if not (folder / RESULTS_FILE).exists():
        lines = [line for line in (folder / "block.log").read_text(errors="replace").splitlines() if line]
        raise RunFailure(
            f"block {index} of side {side.name} wrote no results (exit {code}): {lines[-1][:300] if lines else 'no output'}",
            hint=f"its output is in {folder / 'block.log'}",
        )
    run = load_run(folder)
    relative = str(folder.relative_to(state.request.folder))
    return Block(
        index, side.name, warmup, relative, code, measured_seconds(run, wall_s), wall_s, block_cases(run)
    )


def run_ab(state: ABState, on_block: Callable[[ABState], None]) -> ABState:
    """Warm-ups, then pairs until `stop_reason` says stop; Ctrl-C stops after what was finished."""
    request = state.request
    sides = dict(zip(SIDES, request.sides, strict=True))
    generator = Random(request.seed)
    pair = 0
    try:
        for _ in range(request.warmup):
            for name in pair_order(pair, request.order, generator):
                state.blocks.append(run_block(state, sides[name], warmup=True))
                on_block(state)
            pair += 1
        while state.stopped is None:
            for name in pair_order(pair, request.order, generator):
                state.blocks.append(run_block(state, sides[name], warmup=False))
                state.verdicts = judge(state.blocks, request.resolution, request.use_contended)
                on_block(state)
            pair += 1
            state.stopped = stop_reason(
                state.verdicts, state.measured_s, request.budget_s, state.pairs, request.max_pairs
            )
    except KeyboardInterrupt:
        state.stopped = INTERRUPTED
        state.verdicts = judge(state.blocks, request.resolution, request.use_contended)
    return state


# --- the merged run of each side ---------------------------------------------------------------------


def merged_run(folder: Path, blocks: Sequence[Block], side: str) -> Run | None:
    """A side's counted blocks as one run of the usual schema, each block one pass of every case, so
    `bench report` and `bench compare <folder>/a <folder>/b` read them like any run (None: no block)."""
    runs = [load_run(folder / block.folder) for block in blocks if block.side == side and not block.warmup]
    if not runs:
        return None
    first = runs[0]
    cases: dict[Any, CaseResult] = {}
    for number, run in enumerate(runs):
        for case in run.cases:
            passes = [replace(record, index=number) for record in case.passes]
            earlier = cases.get(case.key)
            if earlier is None or (
                case.ok and not earlier.ok
            ):  # a failure stays only while nothing measured it
                cases[case.key] = replace(case, passes=passes)
            elif earlier.ok and case.ok:
                cases[case.key] = replace(earlier, passes=[*earlier.passes, *passes])
    return replace(
        first,
        cases=list(cases.values()),
        options=replace(first.options, passes=len(runs)),
        finished=runs[-1].finished,
        command_line=f"bench ab side {side}: {len(runs)} blocks merged, one pass each ({first.command_line})",
        plots=[],
    )
