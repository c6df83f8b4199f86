"""The models a run measured: what each is, its size (parameters, FLOPs per sample), data, loss and optimizer.

Shown where a run measured any model but the chapter's MLP, so that a throughput read across models
can be set against the work each sample costs. The counts are the cases' own (counted once, untimed,
on each model's first measured case of each kind); the rest is the model table's.
"""

from __future__ import annotations

from bench.core.catalog import dataset_display_name, workload
from bench.core.models import model_info
from bench.core.results import CaseResult, Run
from bench.render.tables import render
from bench.render.units import fmt_flops


def _counted(cases: list[CaseResult], backward: bool) -> str:
    counts = [
        c.flops_per_sample
        for c in cases
        if c.flops_per_sample and workload(c.key.workload).backward == backward
    ]
    return fmt_flops(counts[0]).removesuffix("/s") if counts else "–"


def models_table(run: Run, fmt: str = "github") -> str | None:
    """One row per model: parameters, FLOPs per sample forward and per training step, data, loss, optimizer."""
    names = list(dict.fromkeys(case.key.model for case in run.cases))
    if names in ([], ["mlp"]):
        return None
    rows = []
    for name in names:
        cases = [case for case in run.cases if case.key.model == name]
        parameters = next((c.parameters for c in cases if c.parameters), None)
        info = model_info(name)
        data = dataset_display_name(run.dataset.name) if info.has_dataset else "synthetic (its own batch)"
        rows.append(
            [name, f"{parameters:,}" if parameters else "–", _counted(cases, False), _counted(cases, True), data,
             info.loss, info.optimizer]
        )  # fmt: skip
    headers = [
        "model",
        "parameters",
        "FLOPs/sample forward",
        "FLOPs/sample train step",
        "data",
        "loss",
        "optimizer",
    ]
    return render(rows, headers, fmt)
