"""A run as one Markdown document (summary.md) and as the console's summary, section by section.

Everything shown is derived from the pass records in results.json, so `bench report` re-renders a
run (finished or partial) exactly as `bench run` rendered it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.core.catalog import COMPUTE_BOUND_SHARE, COUNTING_RULE, OVERHEAD_SHARE
from bench.core.results import Run
from bench.core.stats import NOISY_SPREAD, QUARTILE_METHOD
from bench.render import sections
from bench.render.escape import console_safe, markdown_safe
from bench.render.findings import findings_lines
from bench.render.header import energy_lines, header_lines, peaks_lines
from bench.render.models import models_table

SUMMARY_FILE = "summary.md"
FINDINGS_INTRO = (
    "Each setup's bottleneck, the figure that shows it, and the gain over it of every remedy this run "
    "measured, from two of its cells. A gain is claimed only where the two cells' interquartile intervals do "
    "not overlap; contended, inconsistent, above-peak and invalid cells are never evidence; a remedy the run "
    "did not measure comes with the command that would."
)


def _efficiency_intro(run: Run) -> str:
    peaks, energy = peaks_lines(run.peaks), energy_lines(run.meters)
    return (
        f"FLOPs: {COUNTING_RULE}. Peaks measured in this run: {'; '.join(peaks) or 'not recorded'}. "
        "`ops × floor`: the ATen ops one step dispatches times the per-op floor (on a GPU, or its kernels "
        "times the per-kernel floor, if more), as a share of the step; "
        f"above {OVERHEAD_SHARE:.0%} the step is `overhead-bound`; `compute-bound` only at "
        f"{COMPUTE_BOUND_SHARE:.0%} of the peak or more; else `unexplained` (an epoch that waits "
        f"for its data {OVERHEAD_SHARE:.0%} of the time or more is `data-bound`). Energy: "
        f"{'; '.join(energy) or 'not recorded'} (mean power over the timed work, when it lasted at least 1 s)."
    )


@dataclass(frozen=True)
class Section:
    title: str
    intro: Callable[[Run], str] | None
    table: Callable[..., str | None]


SECTIONS = (
    Section(
        "Throughput (samples/s, higher is better)",
        lambda run: (
            f"Cells marked `~` are noisy (spread IQR/median above {NOISY_SPREAD:.0%}; quartiles are "
            f"{QUARTILE_METHOD}); cells marked `‼` are contended (their threads waited for CPUs other work held: "
            "not to be trusted); cells marked `†` ran on a GPU that throttled or served other processes (NVML, read "
            "around each pass). OOM, error, skipped and invalid cells were attempted and are explained in All cases."
        ),
        sections.throughput_table,
    ),
    Section(
        "Models (what a sample costs)",
        lambda run: (
            "Parameters and FLOPs per sample counted once per model, untimed (the MLP's exactly from its shapes, "
            "the others by torch's FlopCounterMode); `synthetic`: the model trains on its own random batch, so "
            "epoch and train are skipped cells."
        ),
        models_table,
    ),
    Section("Speedup over the CPU (same workload and batch size)", None, sections.speedup_table),
    Section(
        "Epochs (one full pass over the training set)",
        lambda run: (
            "`data share`: time the loop spent waiting for the loader's next batch (`host clock`: wall "
            "time on the host; `cuda events`: GPU time of the resident loader's gather). `first batch`: from the "
            "epoch's start to its first batch; `epoch boundary`: that beyond a batch's usual wait (DataLoader "
            "workers starting up). `vs train_steps`: epoch "
            "time over the time of as many `train_step`s (their mean, the ragged last batch counted by its size) "
            "measured just before it (same pass) and just after it (next pass), the median over the epochs "
            "(1.00x = the data path costs nothing)."
        ),
        sections.epoch_table,
    ),
    Section(
        "Training to accuracy (the chapter's run)",
        lambda run: (
            "Each training run starts from its own seed (weights and shuffling); a run that never "
            "reaches the target has no time to target and is counted, not hidden."
        ),
        sections.train_table,
    ),
    Section(
        "Across processes (torchrun; one model with DistributedDataParallel, or copies side by side)",
        lambda run: (
            "`all processes samples/s`: the samples of every process over the slowest one's time, each "
            "round started after a barrier. `scaling efficiency`: that over N times the one-process case measured "
            "in this run. `all-reduce share`: the gradient all-reduce timed alone, as a share of a step; its `bus "
            "bandwidth` as nccl-tests reports it (bytes/s × 2(n−1)/n), and that `of the link's`: a large all-reduce "
            "between the same ranks, measured at the start of the run. Side by side: independent copies, each its "
            "own model and data, at the same moment."
        ),
        sections.scaling_table,
    ),
    Section(
        "Modes (samples/s; speedup over eager; ★ the fastest valid mode)",
        lambda run: (
            "A mode a device cannot run is `skipped`; one that computes something else than eager (see "
            "the checks below) is `invalid` and never a number here."
        ),
        sections.modes_table,
    ),
    Section(
        "Checks against a reference (modes against eager, data-parallel against one process)",
        lambda run: (
            "`loss`: from the same seed and batches, the mean loss after the validation steps, relative "
            "to eager's; `accuracy`: the training runs' final test accuracy, in points, against eager at the same "
            "batch, or for N data-parallel processes at batch B each, one process at batch N·B. `compile`: the "
            "first call of each shape (compiling or capturing), timed apart and never inside the timed rounds."
        ),
        sections.validation_table,
    ),
    Section(
        "Efficiency (against this device's own measured peak)", _efficiency_intro, sections.efficiency_table
    ),
    Section(
        "Memory (peak per case, largest over its passes)",
        lambda run: (
            "`device peak, own`: the case's peak of live tensors above what was allocated when it "
            "started (cuBLAS workspaces and the like); `device peak allocated`: the same peak, absolute."
        ),
        sections.memory_table,
    ),
    Section("All cases", None, sections.cases_table),
)
# what the console shows after the header, in this order
CONSOLE = (
    ("Throughput (samples/s):", sections.throughput_table),
    ("Models:", models_table),
    ("Speedup over the CPU:", sections.speedup_table),
    ("Across processes:", sections.scaling_table),
    ("Modes (speedup over eager, * fastest valid):", sections.modes_table),
    ("Epochs:", sections.epoch_table),
    ("Training:", sections.train_table),
)


def summary_markdown(run: Run) -> str:
    run = markdown_safe(run)  # every string from the file or the machine escaped, once
    parts = [f"# Benchmark run {run.run_id}", "", *[f"{line}  " for line in header_lines(run)], ""]
    found = findings_lines(run)
    if found:
        parts += ["## Findings", "", FINDINGS_INTRO, "", *found, ""]
    for section in SECTIONS:
        table = section.table(run)
        if not table:
            continue
        parts += [f"## {section.title}", ""]
        if section.intro is not None:
            parts += [section.intro(run), ""]
        parts += [table, ""]
    if run.plots:
        parts += ["## Plots", "", *[f"![{Path(p).stem}]({p})" for p in sorted(run.plots)], ""]
    return "\n".join(parts)


def console_summary(run: Run) -> str:
    run = console_safe(run)
    parts = [*header_lines(run, markup=False)]
    found = findings_lines(run, markup=False)
    if found:
        parts += ["", "Findings (the gain of each remedy, from this run's cells):", *found]
    for title, render in CONSOLE:
        table = render(run, fmt="simple")
        if table:
            parts += ["", title, table.replace("★", "*")]
    return "\n".join(parts)
