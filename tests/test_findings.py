"""Findings: each bottleneck named with its figure, every remedy's gain read from two cells of the run,
no gain claimed from noise or from cells not to be trusted, and the command for what was not measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.analysis.findings import COMPUTE, DATA, MEMORY, OVERHEAD, Remedy, findings
from bench.core.catalog import Status
from bench.core.keys import CaseKey
from bench.core.records import ContentionRecord, PassRecord
from bench.core.results import CaseResult, Peaks
from bench.core.schema import load_run
from bench.render.findings import findings_lines
from bench.render.summary import console_summary, summary_markdown
from tests.conftest import RESULTS, make_run, run_cli

QUIET = ContentionRecord("schedstat", wall_s=1.0, threads=2, wait_s=0.02, cpus=2)
BUSY = ContentionRecord("schedstat", wall_s=1.0, threads=2, wait_s=1.2, cpus=2)
PEAKS = {"cpu": Peaks(float32=100e9, bfloat16=200e9, op_floor_s=2e-6)}


def _step(
    key: CaseKey, seconds: list[float], contention: ContentionRecord = QUIET, ops: int = 40
) -> CaseResult:
    return CaseResult(key, samples_per_unit=key.batch_size, passes=[PassRecord(0, seconds, contention=contention)],
                      flops_per_sample=204_544, ops_per_step=ops)  # fmt: skip


def _epoch(key: CaseKey, seconds: list[float], data: float) -> CaseResult:
    record = PassRecord(0, seconds, data_seconds=[s * data for s in seconds], batches=100, contention=QUIET)
    return CaseResult(key, samples_per_unit=6400, passes=[record], flops_per_sample=204_544, ops_per_step=40)


def test_the_reference_runs_findings_are_its_own_cells_ratios() -> None:
    """Recomputed from results.json: every torchvision epoch waiting half its time or more is a data finding,
    and its resident remedy's gain is the ratio of the two cells' samples/s."""
    run = load_run(RESULTS / "2026-11-29-vm-reference")
    data = [f for f in findings(run) if f.bottleneck == DATA]
    epochs = [c for c in run.cases if c.key.workload == "epoch" and c.key.loader == "torchvision"]
    assert [f.case for f in data] == [c.key for c in epochs] and len(data) == 5
    for finding in data:
        remedy, workers = finding.remedies  # the resident loader measured; DataLoader workers not
        assert (
            workers.flags == (("loaders", "torchvision"), ("loader_workers", "0,2")) and not workers.measured
        )
        base, resident = run.case(finding.case), run.case(remedy.case)  # type: ignore[arg-type]
        assert base is not None and resident is not None and resident.key.loader == "resident"
        assert remedy.gain == pytest.approx(resident.samples_per_s / base.samples_per_s)  # type: ignore[operator]
        assert remedy.claimed and remedy.gain > 5
        assert "waits" in finding.figure


def test_a_faster_mode_within_the_noise_claims_no_gain_and_one_beyond_it_does() -> None:
    batch = 1  # a tiny step: 40 ops x 2 us = 80 us of a 100 us step is overhead-bound
    eager = _step(CaseKey("train_step", "cpu", batch), [100e-6, 90e-6, 110e-6, 100e-6])
    fused_noise = _step(CaseKey("train_step", "cpu", batch, mode="fused"), [95e-6, 85e-6, 105e-6, 98e-6])
    compiled = _step(CaseKey("train_step", "cpu", batch, mode="compile"), [40e-6, 41e-6, 39e-6, 40e-6])
    run = make_run(eager, fused_noise, compiled, peaks=PEAKS)
    (finding,) = findings(run)
    assert finding.bottleneck == OVERHEAD and "80%" in finding.figure
    fused, compile_ = finding.remedies
    assert fused.what == "fused" and fused.gain is not None and fused.gain > 1 and not fused.claimed
    assert compile_.claimed and compile_.gain == pytest.approx(2.5)
    text = "\n".join(findings_lines(run))
    assert "fused 1.04×, within noise: no gain claimed" in text and "compile 2.50×" in text


def test_cells_not_to_be_trusted_are_no_evidence_and_the_block_says_so() -> None:
    eager = _step(CaseKey("train_step", "cpu", 1), [100e-6] * 4)
    busy_fused = _step(CaseKey("train_step", "cpu", 1, mode="fused"), [30e-6] * 4, contention=BUSY)
    busy_eager = _step(CaseKey("train_step", "cpu", 64), [1e-3] * 4, contention=BUSY)
    run = make_run(eager, busy_fused, busy_eager, peaks=PEAKS)
    (finding,) = findings(run)  # the contended batch-64 cell found nothing
    fused = finding.remedies[0]
    assert fused.left_out == "contended" and fused.gain is None
    lines = findings_lines(run)
    assert any("fused: its cell is not evidence (contended)" in line for line in lines)
    assert "Left out of every finding: 2 cells" in lines[-1] and "contended" in lines[-1]


def test_a_remedy_not_measured_comes_with_the_one_command_that_would_measure_it() -> None:
    big = _step(CaseKey("train_step", "cpu", 4096), [4096 * 204_544 / 60e9] * 4)  # 60% of peak
    bigger = _step(CaseKey("forward", "cpu", 1024), [1024 * 101_632 / 50e9] * 4)
    bigger = CaseResult(bigger.key, samples_per_unit=1024, passes=bigger.passes, flops_per_sample=101_632,
                        ops_per_step=10)  # fmt: skip
    loader = _epoch(CaseKey("epoch", "cpu", 64, "torchvision"), [1.0, 1.01, 0.99], data=0.9)
    run = make_run(big, bigger, loader, peaks=PEAKS)
    assert {f.bottleneck for f in findings(run)} == {COMPUTE, DATA}
    text = "\n".join(findings_lines(run, markup=False))
    assert ("not measured: bf16 (bench run --devices cpu --workloads train_step,forward --batch-sizes 1024,4096 "
            "--modes eager,bf16)") in text  # fmt: skip
    assert (
        "not measured: device-resident data (bench run --devices cpu --workloads epoch --batch-sizes 64 "
        in text
    )
    assert all(r.measured is False for f in findings(run) for r in f.remedies if r.gain is None)


def test_a_batch_that_ran_out_of_memory_names_the_largest_that_fit() -> None:
    fits = _step(CaseKey("train_step", "cuda:0", 1024), [1e-3] * 4)
    oom = CaseResult(CaseKey("train_step", "cuda:0", 65536), status=Status.OOM, error="CUDA out of memory")
    (finding,) = [f for f in findings(make_run(fits, oom)) if f.bottleneck == MEMORY]
    assert finding.case == oom.key and finding.remedies[0] == Remedy("batch 1024 fits")


def test_findings_head_the_summary_the_console_and_their_own_command(tmp_path: Path) -> None:
    run = load_run(RESULTS / "2026-11-29-vm-reference")
    markdown = summary_markdown(run)
    assert markdown.index("## Findings") < markdown.index("## Throughput")
    assert "device-resident data 16×" in markdown and "Findings (" in console_summary(run)
    result = run_cli("findings", str(RESULTS / "2026-11-29-vm-reference"))
    assert result.returncode == 0 and "cpu: data" in result.output and "device-resident data" in result.output
    missing = run_cli("findings", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "Traceback" not in missing.output


def test_loader_settings_measured_in_the_run_are_remedies_with_their_gains() -> None:
    chapter = _epoch(CaseKey("epoch", "cpu", 64, "torchvision"), [10.0, 10.1, 9.9], data=0.9)
    two = _epoch(CaseKey("epoch", "cpu", 64, "torchvision", workers=2), [6.25, 6.3, 6.2], data=0.5)
    one = _epoch(CaseKey("epoch", "cpu", 64, "torchvision", workers=1), [9.8, 10.2, 10.0], data=0.85)
    resident = _epoch(CaseKey("epoch", "cpu", 64, "resident"), [0.6, 0.61, 0.59], data=0.1)
    run = make_run(chapter, one, two, resident, peaks=PEAKS)
    base = next(f for f in findings(run) if f.case == chapter.key)
    gains = {r.what: (r.gain, r.claimed) for r in base.remedies}
    assert gains["device-resident data"] == (pytest.approx(10.0 / 0.6), True)
    assert gains["2 workers"] == (pytest.approx(1.6), True)
    assert gains["1 workers"][1] is False  # within its noise: no gain claimed
    assert "2 DataLoader workers" not in gains  # measured, so no command for it
    text = "\n".join(findings_lines(run))
    assert "2 workers 1.60×" in text and "device-resident data 17×" in text
