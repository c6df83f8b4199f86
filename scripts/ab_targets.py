"""Issue 20's targets for `bench ab`, measured by hand on this machine (not in CI; minutes to hours).

    python scripts/ab_targets.py                      # the issue's sizes: 10 A/A at 60 s, 5 changes at 120 s
    python scripts/ab_targets.py --aa-reps 2 --change-reps 2 --no-truth   # a shortened version
    python scripts/ab_targets.py --aa-reps 0 --change-reps 0 --no-truth   # only rewrite targets.md

Repetitions already in `--out` are kept and counted: the script adds its repetitions after them.

1. `bench ab --aa` on train_step at batch 64 and 1024, `--aa-reps` times at `--aa-budget`: how many
   repetitions call a difference (`B faster`/`B slower`) at 5% resolution (target: at most 1 of 10).
2. A real change (`--b-args "--modes fused"` at batch 64), `--change-reps` times at `--change-budget`:
   is it called, in the right direction, each time? With `--truth`, one run `--truth-factor` times
   longer gives the true ratio, and how many of the intervals contain it is counted (target: 4 of 5).

Each repetition's ab.md and ab.json go under `--out` (default results/examples/ab-targets/), the block
folders are removed unless `--keep-blocks` (every block's raw samples are in ab.json), and
`targets.md` sums it up. The machine's load at the start and end of each repetition is recorded:
on a shared machine other work changes what the verdicts can see.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIFFERENT = ("B faster", "B slower")


def bench_ab(folder: Path, side_args: list[str], budget: float, shared: list[str], extra: list[str]) -> dict:
    command = [sys.executable, "-m", "bench", "ab", *side_args, "--budget", str(budget), *extra]
    command += ["--out", str(folder), "--", *shared]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    load_before = os.getloadavg()
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench ab failed ({done.returncode}): {done.stderr[-2000:]}")
    meta = {
        "command": command,
        "seconds": time.monotonic() - started,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    (folder / "script.json").write_text(json.dumps(meta, indent=1) + "\n")
    return read(folder)


def read(folder: Path) -> dict:
    """A repetition's ab.json, with what this script noted about it (load, wall time) where it did."""
    record = json.loads((folder / "ab.json").read_text())
    script = folder / "script.json"
    record["_script"] = json.loads(script.read_text()) if script.exists() else None
    return record


def tidy(folder: Path, keep_blocks: bool) -> None:
    if keep_blocks:
        return
    for name in ("blocks", "a", "b", "inductor-cache-a", "inductor-cache-b"):
        shutil.rmtree(folder / name, ignore_errors=True)


def rows_of(kind: str, rep: int, record: dict) -> list[str]:
    meta = record["_script"] or {"seconds": record["wall_s"], "load_before": ["?"], "load_after": ["?"]}
    rows = []
    for row in record["verdicts"]:
        interval = (
            f"{row['low']:.3g}–{row['high']:.3g}"
            if row["low"] is not None and len(row["ratios"]) > 2
            else "–"
        )
        ratio = f"{row['ratio']:.3f}" if row["ratio"] is not None else ""
        rows.append(
            f"| {kind} | {rep} | {row['label_a']} | {len(row['ratios'])} (+{row['dropped']} left out) | {ratio} | "
            f"{interval} | {row['verdict']} | {record['stopped']} | {record['measured_s']:.0f} / "
            f"{meta['seconds']:.0f} | {load(meta['load_before'])} → {load(meta['load_after'])} |"
        )
    return rows


def load(values: list) -> str:
    return f"{values[0]:.1f}" if isinstance(values[0], (int, float)) else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "examples" / "ab-targets")
    parser.add_argument("--aa-reps", type=int, default=10)
    parser.add_argument("--aa-budget", type=float, default=60)
    parser.add_argument("--aa-batch-sizes", default="64,1024")
    parser.add_argument("--change-reps", type=int, default=5)
    parser.add_argument("--change-budget", type=float, default=120)
    parser.add_argument("--change-args", default="--modes fused")
    parser.add_argument("--change-batch-sizes", default="64")
    parser.add_argument("--truth", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--truth-factor", type=float, default=10)
    parser.add_argument("--max-time", default="0.3", help="bench run --max-time of each block (default: 0.3)")
    parser.add_argument("--extra", default="", help="more bench ab options, e.g. --use-contended")
    parser.add_argument("--keep-blocks", action="store_true")
    parser.add_argument(
        "--note", default="", help="a line about the machine's state, written into targets.md"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    common = [
        "--dataset",
        "synthetic",
        "--workloads",
        "train_step",
        "--devices",
        "cpu",
        "--max-time",
        args.max_time,
    ]
    extra = args.extra.split()
    lines: list[str] = []
    aa_calls = 0
    done_aa = len(list(args.out.glob("aa-*/ab.json")))  # earlier repetitions in this folder count too
    for rep in range(done_aa, done_aa + args.aa_reps):
        folder = args.out / f"aa-{rep + 1:02d}"
        bench_ab(folder, ["--aa"], args.aa_budget, [*common, "--batch-sizes", args.aa_batch_sizes], extra)
        tidy(folder, args.keep_blocks)
        print(f"A/A {rep + 1} done", flush=True)
    aa_folders = sorted(args.out.glob("aa-*/ab.json"))
    for rep, path in enumerate(aa_folders):
        record = read(path.parent)
        aa_calls += any(row["verdict"] in DIFFERENT for row in record["verdicts"])
        lines += rows_of("A/A", rep + 1, record)
    change_shared = [*common, "--batch-sizes", args.change_batch_sizes]
    change = ["--b-args", args.change_args]
    truth = None
    if args.truth:
        folder = args.out / "truth"
        bench_ab(
            folder,
            change,
            args.change_budget * args.truth_factor,
            change_shared,
            [*extra, "--resolution", "10"],
        )
        tidy(folder, args.keep_blocks)
        record = read(folder)
        truth = record["verdicts"][0]["ratio"]
        lines += rows_of("truth", 1, record)
    results = []
    done_change = len(list(args.out.glob("change-*/ab.json")))
    for rep in range(done_change, done_change + args.change_reps):
        folder = args.out / f"change-{rep + 1:02d}"
        bench_ab(folder, change, args.change_budget, change_shared, extra)
        tidy(folder, args.keep_blocks)
        print(f"change {rep + 1} done", flush=True)
    for rep, path in enumerate(sorted(args.out.glob("change-*/ab.json"))):
        record = read(path.parent)
        results.append(record["verdicts"][0])
        lines += rows_of("change", rep + 1, record)
    called = [row["verdict"] for row in results]
    contains = [
        truth is not None and row["low"] is not None and row["low"] <= truth <= row["high"] for row in results
    ]
    summary = [
        "# `bench ab` against issue 20's targets",
        "",
        f"Made by `python scripts/ab_targets.py {' '.join(sys.argv[1:])}` on {os.uname().nodename}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Shared options of each block: `{' '.join(common)}`; "
        f"the change: `{' '.join(change)}` at batch {args.change_batch_sizes}.",
        "Repetitions accumulate in the folder over invocations; this file counts all of them.",
        *(["", args.note] if args.note else []),
        "",
        f"- A/A: {aa_calls} of {len(aa_folders)} repetitions called a difference at 5% resolution (target: at most 1 of 10).",
        f"- change: verdicts {', '.join(called) or 'none'} (target: the right direction in each of 5).",
        f"- true ratio: {truth:.3f} (one run {args.truth_factor:g}x longer); intervals containing it: "
        f"{sum(contains)} of {len(contains)} (target: 4 of 5)."
        if truth is not None
        else "- true ratio: not measured (--no-truth).",
        "",
        "| run | rep | case | pairs | B/A | interval | verdict | stopped | measured / wall s | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *lines,
    ]
    (args.out / "targets.md").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
