"""`bench run --profile`: where one step's time goes, as the profiler sees it, never inside timed work.

After a case's timed passes, a fresh copy of its model (same mode, same device, same batch) runs a
few warm steps under `torch.profiler` (CPU and, on a GPU, CUDA activities; shapes and memory
recorded). Each case leaves a Chrome/Perfetto trace (`chrome://tracing`, ui.perfetto.dev) and the
profiler's `key_averages` table as CSV in the run folder's `profiles/`. Epoch and train cases are
profiled as their training step. Under `--nproc`, every rank profiles the same steps together
(DDP's all-reduce inside them) and writes its own files, named with its rank.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench.core.keys import CaseKey, item_id
from bench.core.store import write_atomic
from bench.measure import modes
from bench.measure.data import Dataset
from bench.measure.devices import synchronize
from bench.measure.workloads import make_step

PROFILES_DIR = "profiles"
PROFILED_STEPS = 5
OP_TABLE_FIELDS = ("op", "calls", "self_cpu_us", "cpu_total_us", "self_device_us", "device_total_us",
                   "self_cpu_memory_bytes", "self_device_memory_bytes")  # fmt: skip


def profile_name(key: CaseKey, rank: int | None = None) -> str:
    """`train_step-step-cpu-64-compile`: the case's pytest id without its pass (`-rank1`: one rank's)."""
    name = item_id(key, 0).removesuffix("-pass1")
    return name if rank is None else f"{name}-rank{rank}"


def profiled_workload(key: CaseKey) -> str:
    """The step a case is profiled as: its own, or the training step of an epoch or a training run."""
    return key.workload if key.workload in ("forward", "forward_backward", "train_step") else "train_step"


def _export_trace(profiler: profile, path: Path) -> None:
    """The Chrome trace, written beside its place and moved there whole (readers never see half)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        profiler.export_chrome_trace(str(partial))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def op_rows(profiler: profile) -> list[dict[str, object]]:
    """The key_averages table as rows, the costliest op (device time, else CPU time) first."""
    rows = []
    for event in profiler.key_averages():
        device_self = getattr(event, "self_device_time_total", None)
        if device_self is None:
            device_self = getattr(event, "self_cuda_time_total", 0)
        device_total = getattr(event, "device_time_total", None)
        if device_total is None:
            device_total = getattr(event, "cuda_time_total", 0)
        rows.append({
            "op": event.key, "calls": event.count, "self_cpu_us": round(event.self_cpu_time_total, 3),
            "cpu_total_us": round(event.cpu_time_total, 3), "self_device_us": round(device_self or 0, 3),
            "device_total_us": round(device_total or 0, 3),
            "self_cpu_memory_bytes": getattr(event, "self_cpu_memory_usage", 0),
            "self_device_memory_bytes": getattr(event, "self_device_memory_usage", None)
            or getattr(event, "self_cuda_memory_usage", 0),
        })  # fmt: skip
    rows.sort(key=lambda row: (-float(row["self_device_us"]), -float(row["self_cpu_us"])))
    return rows


def profile_case(key: CaseKey, dataset: Dataset, folder: Path) -> list[str]:
    """Profiles PROFILED_STEPS warm steps of `key`'s model and mode; the files written, relative to
    `folder`. Run inside the case's context (mode, threads, current device), after its timed passes."""
    device = torch.device(key.device)
    training = modes.build(key.mode, device, 0, key.model, key.batch_size)
    step = make_step(profiled_workload(key), dataset, device, key.batch_size, training)
    return profile_steps(step, device, folder, profile_name(key))


def profile_steps(step: Callable[[], object], device: torch.device, folder: Path, name: str) -> list[str]:
    """PROFILED_STEPS calls of a warm `step` under the profiler: `name`'s trace and op table in
    `folder`'s profiles/, returned relative to `folder`."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True, profile_memory=True) as profiler:
        for _ in range(PROFILED_STEPS):
            step()
        synchronize(device)
    target = folder / PROFILES_DIR
    target.mkdir(exist_ok=True)
    trace, table = target / f"{name}.trace.json", target / f"{name}.ops.csv"
    _export_trace(profiler, trace)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=OP_TABLE_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(op_rows(profiler))
    write_atomic(table, text.getvalue())
    return [str(trace.relative_to(folder)), str(table.relative_to(folder))]
