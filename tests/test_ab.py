"""`bench ab`: the paired statistics and the stopping rule on recorded ratios (deterministic), the
verdict table, the sides' checks before measuring, and two real A/B runs end to end (slow)."""

from __future__ import annotations

import json
import math
import os
import random
import statistics
from pathlib import Path

import pytest

from bench.analysis.ab import (
    ALL_DECIDED,
    BUDGET_SPENT,
    FASTER,
    MIN_PAIRS,
    PAIRS_DONE,
    SLOWER,
    UNDECIDED,
    Block,
    BlockCase,
    case_confidence,
    case_ratios,
    counted_pairs,
    judge,
    judge_case,
    pair_order,
    same_verdict,
    stop_reason,
    verdict,
)
from bench.cli import main
from bench.core.schema import load_run
from bench.core.stats import paired_ratio_interval, t_quantile
from bench.engine.ab import Side, block_command, refused_args, side_environ
from bench.render.ab import ab_markdown, verdict_lines
from tests.conftest import run_cli

TINY = ("--dataset", "synthetic", "--workloads", "forward", "--batch-sizes", "64", "--max-time", "0.05")
TINY += ("--devices", "cpu", "--retry-contended", "0")
SAME = same_verdict(0.05)


def block(
    index: int, side: str, medians: list[float | None], warmup: bool = False, contended: bool = False
) -> Block:
    cases = [
        BlockCase(f"case {i}", "ok" if m else "error", m, [m] if m else [], contended)
        for i, m in enumerate(medians)
    ]
    return Block(index, side, warmup, f"blocks/{index:02d}-{side}", 0, 1.0, 2.0, cases)


def abba_blocks(pairs: list[tuple[float, float]], warmup: bool = True) -> list[Block]:
    """Warm-ups, then pairs in ABBA order from (A's median, B's median) of one case."""
    blocks = [block(0, "A", [9.0], warmup=True), block(1, "B", [9.0], warmup=True)] if warmup else []
    for number, (a, b) in enumerate(pairs):
        order = pair_order(number + (1 if warmup else 0))
        for side in order:
            blocks.append(block(len(blocks), side, [a if side == "A" else b]))
    return blocks


# --- order and pairs ---------------------------------------------------------------------------------


def test_abba_alternates_which_side_goes_first_and_random_is_seeded() -> None:
    assert [pair_order(k) for k in range(4)] == [("A", "B"), ("B", "A"), ("A", "B"), ("B", "A")]
    generator_a, generator_b = random.Random(3), random.Random(3)
    drawn_a = [pair_order(k, "random", generator_a) for k in range(20)]
    drawn_b = [pair_order(k, "random", generator_b) for k in range(20)]
    assert drawn_a == drawn_b and {("A", "B"), ("B", "A")} == set(drawn_a)
    with pytest.raises(ValueError):
        pair_order(0, "sideways")


def test_pairs_skip_warmups_and_orient_each_pair_as_a_then_b() -> None:
    blocks = abba_blocks([(1.0, 2.0), (1.0, 3.0), (1.0, 4.0)])
    pairs = counted_pairs(blocks)
    assert [(a.side, b.side) for a, b in pairs] == [("A", "B")] * 3
    assert case_ratios(pairs, 0) == ([2.0, 3.0, 4.0], 0)
    assert len(counted_pairs(blocks[:-1])) == 2  # a lone last block waits for its partner
    with pytest.raises(ValueError, match="not one of each side"):
        counted_pairs([block(0, "A", [1.0]), block(1, "A", [1.0])])


def test_a_pair_with_a_failed_or_contended_block_is_left_out_of_that_case() -> None:
    pairs = [
        (block(0, "A", [1.0, 1.0]), block(1, "B", [1.1, None])),
        (block(2, "A", [1.0, 1.0], contended=True), block(3, "B", [1.2, 1.2])),
    ]
    assert case_ratios(pairs, 0) == ([pytest.approx(1.1)], 1)
    assert case_ratios(pairs, 1) == ([], 2)
    ratios, dropped = case_ratios(pairs, 0, use_contended=True)
    assert ratios == [pytest.approx(1.1), pytest.approx(1.2)] and dropped == 0


# --- the interval and the verdict ----------------------------------------------------------------


def test_paired_interval_is_students_t_on_the_log_ratios() -> None:
    ratios = [1.10, 1.05, 1.20, 1.12, 1.08]
    logs = [math.log(r) for r in ratios]
    margin = t_quantile(0.975, 4) * statistics.stdev(logs) / math.sqrt(5)
    estimate = paired_ratio_interval(ratios, 0.95)
    assert estimate.ratio == pytest.approx(math.exp(statistics.fmean(logs)))
    assert estimate.low == pytest.approx(math.exp(statistics.fmean(logs) - margin))
    assert estimate.high == pytest.approx(math.exp(statistics.fmean(logs) + margin))
    assert paired_ratio_interval([1.3]).low == paired_ratio_interval([1.3]).high == pytest.approx(1.3)
    halving_and_doubling = paired_ratio_interval([0.5, 2.0])
    assert halving_and_doubling.ratio == pytest.approx(1.0)  # symmetric on the log scale
    with pytest.raises(ValueError):
        paired_ratio_interval([1.0, 0.0])


def test_verdict_thresholds_at_the_resolution() -> None:
    n = MIN_PAIRS
    assert verdict(0.97, 1.03, n, 0.05) == SAME
    assert verdict(1.01, 1.09, n, 0.05) == SLOWER  # above 1, not all within ±5%
    assert verdict(0.80, 0.97, n, 0.05) == FASTER
    assert verdict(0.94, 1.08, n, 0.05) == UNDECIDED
    assert verdict(1.01, 1.03, n, 0.05) == SAME  # a change smaller than the resolution is `same`
    assert verdict(1.5, 1.6, n - 1, 0.05) == UNDECIDED  # too few pairs for any verdict
    assert verdict(0.92, 1.08, n, 0.10) == same_verdict(0.10)


def test_recorded_ratios_of_a_real_slowdown_are_called_slower() -> None:
    # B/A of six pairs of `--modes fused` against eager at batch 64 (time ratios, fused slower here)
    ratios = [1.18, 1.22, 1.13, 1.25, 1.16, 1.21]
    row = judge_case(0, "train_step · cpu · batch 64", "train_step · cpu · batch 64 · fused", ratios, 0)
    assert row.verdict == SLOWER and row.low is not None and row.low > 1
    assert row.label == "train_step · cpu · batch 64 vs train_step · cpu · batch 64 · fused"
    faster = judge_case(0, "x", "x", [1 / r for r in ratios], 0)
    assert faster.verdict == FASTER


def test_recorded_ratios_of_a_against_itself_are_same_or_undecided() -> None:
    quiet = [1.01, 0.99, 1.00, 1.02, 0.98, 1.01, 0.99]
    noisy = [1.30, 0.75, 1.10, 0.92, 1.25, 0.80]
    assert judge_case(0, "x", "x", quiet, 0).verdict == SAME
    assert judge_case(0, "x", "x", noisy, 0).verdict == UNDECIDED
    assert judge_case(0, "x", "x", [], 3).verdict == UNDECIDED


def test_the_sequential_rule_keeps_false_alarms_rare_and_sees_a_ten_percent_change() -> None:
    """Judged after every pair up to 16, stopping at the first verdict: seeded, log-normal pair noise."""
    generator = random.Random(20)

    def first_verdict(true_ratio: float, noise: float) -> str:
        ratios: list[float] = []
        for _ in range(16):
            ratios.append(true_ratio * math.exp(generator.gauss(0, noise)))
            row = judge_case(0, "x", "x", ratios, 0)
            if row.decided:
                return row.verdict
        return UNDECIDED

    alarms = sum(first_verdict(1.0, 0.08) in (SLOWER, FASTER) for _ in range(150))
    assert alarms <= 150 * 0.08, alarms
    called = [first_verdict(1.10, 0.05) for _ in range(60)]
    assert called.count(SLOWER) >= 57 and FASTER not in called


def test_judge_pairs_cases_by_position_and_bonferroni_over_cases() -> None:
    blocks = abba_blocks([(1.0, 1.2 + 0.01 * k) for k in range(MIN_PAIRS)])
    rows = judge(blocks)
    assert len(rows) == 1 and rows[0].verdict == SLOWER and rows[0].pairs == MIN_PAIRS
    assert rows[0].median_a_s == pytest.approx(1.0)
    assert case_confidence(1) == pytest.approx(0.99) and case_confidence(4) == pytest.approx(0.9975)


def test_stop_rule() -> None:
    undecided = judge_case(0, "x", "x", [1.0, 1.3], 0)
    decided = judge_case(0, "x", "x", [1.0] * MIN_PAIRS, 0)
    assert decided.verdict == SAME
    assert stop_reason([decided], 10, 120, 6) == ALL_DECIDED
    assert stop_reason([decided, undecided], 10, 120, 6) is None
    assert stop_reason([undecided], 121, 120, 6) == BUDGET_SPENT
    assert stop_reason([undecided], 10, 120, 3, max_pairs=3) == PAIRS_DONE


# --- rendering -------------------------------------------------------------------------------------


def test_markdown_names_both_sides_the_stop_and_each_verdict() -> None:
    blocks = abba_blocks([(1.0, 1.15 + 0.01 * k) for k in range(MIN_PAIRS)])
    rows = judge(blocks)
    side = {
        "python": "py",
        "args": [],
        "env": {},
        "python_version": "3.11",
        "torch": "2.14",
        "torchvision": "0.29",
    }
    record = {
        "aa": False,
        "command_line": "bench ab --b-args '--modes fused'",
        "created": "now",
        "sides": {"A": side, "B": {**side, "args": ["--modes", "fused"], "env": {"OMP_NUM_THREADS": "1"}}},
        "shared_args": ["--workloads", "train_step"],
        "options": {"resolution": 0.05, "order": "abba", "budget_s": 120, "use_contended": False},
        "measured_s": 30.0,
        "wall_s": 90.0,
        "stopped": ALL_DECIDED,
    }
    text = ab_markdown(record, rows, blocks)
    assert "options: `--modes fused`" in text and "`OMP_NUM_THREADS=1`" in text and "torch 2.14" in text
    assert (
        f"Stopped: **{ALL_DECIDED}**" in text and f"{MIN_PAIRS} pairs counted" in text and "2 warm-up" in text
    )
    table_row = next(line for line in text.splitlines() if line.startswith("| case 0"))
    assert "B slower" in table_row and "+1" in table_row
    assert "B slower" in verdict_lines(rows)[0] and f"over {MIN_PAIRS} pairs" in verdict_lines(rows)[0]


# --- the sides, before anything is measured --------------------------------------------------------


def test_block_command_and_environment_of_a_side(tmp_path: Path) -> None:
    side = Side("B", "/py", ("--modes", "fused"), {"OMP_NUM_THREADS": "1"})
    assert block_command(side, ("--workloads", "forward"), tmp_path / "x") == [
        "/py", "-m", "bench", "run", "--workloads", "forward", "--modes", "fused", "--passes", "1",
        "--out", str(tmp_path / "x"),
    ]  # fmt: skip
    env = side_environ(side, tmp_path)
    assert env["OMP_NUM_THREADS"] == "1" and env["TORCHINDUCTOR_CACHE_DIR"].endswith("inductor-cache-b")
    assert env["PYTHONPATH"].split(":")[0] == str(Path(__file__).resolve().parent.parent)
    assert refused_args(["--out=x", "--passes", "3", "--modes", "fused"]) == ["--out=x", "--passes"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--aa", "--b-args", "--modes fused"], "--aa compares A with itself"),
        (["--b-env", "NOEQUALS"], "is not KEY=VALUE"),
        (["--b-env", "OMP_NUM_THREADS=zero"], "--b-env: environment variable OMP_NUM_THREADS"),
        (["--b-args", "'unclosed"], "does not split"),
        ([], "sides A and B are the same"),
        (["--aa", "--budget", "0"], "--budget 0 must be a positive"),
        (["--aa", "--resolution", "0"], "--resolution 0 must be"),
    ],
)
def test_bad_side_options_are_one_line_before_anything_runs(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["ab", *args, "--out", str(tmp_path / "ab"), "--", "--workloads", "forward"]) == 2
    error = capsys.readouterr().err
    assert message in error and error.startswith("bench ab: error:")
    assert not (tmp_path / "ab").exists()


@pytest.mark.slow
def test_a_side_that_cannot_run_is_named_before_measuring(tmp_path: Path) -> None:
    no_torch = tmp_path / "venv"
    import venv

    venv.create(no_torch, with_pip=False)
    python = str(no_torch / "bin" / "python")
    result = run_cli("ab", "--b-python", python, "--out", str(tmp_path / "ab"), "--", *TINY)
    assert result.returncode == 2, result.output
    assert f"side B ({python}): torch is not installed" in result.stderr
    result = run_cli("ab", "--b-args", "--modes nosuchmode", "--out", str(tmp_path / "ab"), "--", *TINY)
    assert result.returncode == 2 and "side B" in result.stderr and "nosuchmode" in result.stderr
    assert not (tmp_path / "ab").exists()  # nothing measured, nothing left behind


# --- end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_aa_end_to_end_records_blocks_verdicts_and_merged_runs(tmp_path: Path) -> None:
    folder = tmp_path / "aa"
    result = run_cli(
        "ab", "--aa", "--warmup", "1", "--max-pairs", "1", "--budget", "5", "--use-contended",
        "--out", str(folder), "--", *TINY,
    )  # fmt: skip
    assert result.returncode == 0, result.output
    record = json.loads((folder / "ab.json").read_text())
    assert [(b["side"], b["warmup"]) for b in record["blocks"]] == [
        ("A", True),
        ("B", True),
        ("B", False),
        ("A", False),
    ]  # fmt: skip  (ABBA: the counted pair after the warm-ups starts with B)
    assert record["sides"]["A"]["torch"] == record["sides"]["B"]["torch"] and record["aa"]
    assert record["stopped"] in (BUDGET_SPENT, PAIRS_DONE)
    samples = [b["cases"][0]["samples_s"] for b in record["blocks"]]
    assert all(len(s) >= 1 and all(x > 0 for x in s) for s in samples)
    for b in record["blocks"]:
        assert (folder / b["folder"] / "results.json").exists() and (
            folder / b["folder"] / "block.log"
        ).exists()
    (row,) = record["verdicts"]
    assert row["verdict"] == UNDECIDED and len(row["ratios"]) + row["dropped"] == 1  # one pair: no verdict
    assert "A against itself" in (folder / "ab.md").read_text()
    merged = load_run(folder / "a")
    assert merged.options.passes == 1 and len(merged.cases[0].passes) == 1
    compared = run_cli("compare", str(folder / "a"), str(folder / "b"))
    assert compared.returncode == 0, compared.output
    assert "forward · cpu · batch 64" in compared.stdout
    assert "forward · cpu · batch 64" in result.stdout and "Stopped:" in result.stdout


@pytest.mark.slow
def test_b_env_and_b_args_reach_only_side_b(tmp_path: Path) -> None:
    folder = tmp_path / "ab"
    result = run_cli(
        "ab", "--b-env", "OMP_NUM_THREADS=1", "--b-args", "--threads 1", "--warmup", "0", "--max-pairs", "1",
        "--budget", "1", "--use-contended", "--out", str(folder), "--", *TINY,
    )  # fmt: skip
    assert result.returncode == 0, result.output
    record = json.loads((folder / "ab.json").read_text())
    assert record["sides"]["B"]["env"] == {"OMP_NUM_THREADS": "1"}
    assert record["sides"]["B"]["cases"] == ["forward · cpu · batch 64 · 1 threads"]
    assert record["sides"]["A"]["cases"] == ["forward · cpu · batch 64"]
    runs = {b["side"]: load_run(folder / b["folder"]) for b in record["blocks"]}
    assert str(runs["B"].env["cpu"]["omp_num_threads"]) == "1" and runs["B"].env["cpu"]["torch_threads"] == 1
    assert str(runs["A"].env["cpu"]["omp_num_threads"]) == str(os.environ.get("OMP_NUM_THREADS") or None)
    assert runs["B"].cases[0].key.threads == 1 and runs["A"].cases[0].key.threads is None
    assert record["verdicts"][0]["label_b"] == "forward · cpu · batch 64 · 1 threads"


def test_interval_text_says_nothing_below_three_pairs_and_stays_short_when_wide() -> None:
    from bench.render.ab import interval_text

    assert interval_text(judge_case(0, "x", "x", [1.0, 4.0], 0)) == "–"  # df 1: the bounds say nothing
    wide = interval_text(judge_case(0, "x", "x", [0.01, 100.0, 1.0], 0))
    assert "e" in wide and len(wide) < 20
    assert interval_text(judge_case(0, "x", "x", [1.0, 1.02, 0.99], 0)).startswith("0.9")
