"""Older results files, upgraded on reading to the current version (3), one version at a time.

* Version 1 (before cases kept one record per pass): pooled samples are split back into passes by the
  pass records they carried.
* Version 2 (before a case held its identity whole and the harness's own facts had typed sections):
  each case's identity fields move into its `key`, and what the harness wrote into `env` (timing,
  peaks, energy meters, the disturbance during the run, the processes, the install check, the
  command line) moves into its section.

Anything malformed is passed on unchanged, for validation to name.
"""

from __future__ import annotations

from typing import Any

from bench.core.catalog import WORKLOAD_BY_NAME, Timing

KEY_FIELDS = ("workload", "device", "batch_size", "loader", "mode", "threads", "world_size", "side_by_side")
ENV_SECTIONS = {  # v2 env entry -> v3 section of the run
    "timing": "timing",
    "peaks": "peaks",
    "energy": "meters",
    "during_run": "during_run",
    "processes": "processes",
    "check": "check",
    "command_line": "command_line",
}


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A file of version 1 or 2 as version 3 (a current one unchanged)."""
    if data.get("schema_version") == 1:
        data = upgrade_v1(data)
    if data.get("schema_version") == 2:
        data = upgrade_v2(data)
    return data


def upgrade_v2(data: dict[str, Any]) -> dict[str, Any]:
    """A version 2 file as version 3: case identities under `key`, the harness's facts in their sections."""
    upgraded = dict(data, schema_version=3)
    env = data.get("env")
    if isinstance(env, dict):
        env = dict(env)
        for old, new in ENV_SECTIONS.items():
            if old in env:
                upgraded[new] = env.pop(old)
        upgraded["env"] = env
    cases = data.get("cases")
    if isinstance(cases, list):
        upgraded["cases"] = [_case_key_inside(case) for case in cases]
    return upgraded


def _case_key_inside(case: Any) -> Any:
    if not isinstance(case, dict) or "key" in case:
        return case
    key = {name: case[name] for name in KEY_FIELDS if name in case}
    return {"key": key, **{name: value for name, value in case.items() if name not in KEY_FIELDS}}


V1_OPTION_NAMES = {
    "devices", "batch_sizes", "workloads", "loaders", "torchvision_batch_sizes", "train_loader", "epochs",
    "epoch_repeats", "target_accuracy", "max_time", "min_rounds", "passes", "quick",
}  # fmt: skip


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version 1 file as version 2: pooled samples split back into one record per pass.

    Version 1 kept the calibration (calls per round, timer) of the first pass only, so later passes
    get none; memory peaks were kept per case, so they go to the first pass. Anything malformed is
    passed on unchanged for validation to name.
    """
    upgraded = dict(data, schema_version=2)
    options = data.get("options")
    if isinstance(options, dict):
        upgraded["options"] = {k: v for k, v in options.items() if k in V1_OPTION_NAMES}
        upgraded["plots"] = options.get("plots", [])
    cases = data.get("cases")
    if isinstance(cases, list):
        upgraded["cases"] = [_upgrade_case(case) if isinstance(case, dict) else case for case in cases]
    return upgraded


V1_MEMORY = {
    "host_rss_start_bytes": "host_rss_start_bytes",
    "host_rss_peak_bytes": "host_rss_peak_bytes",
    "device_peak_allocated_bytes": "device_peak_allocated_bytes",
    "device_peak_reserved_bytes": "device_peak_reserved_bytes",
    "nvml_used_peak_bytes": "nvml_used_bytes",
}


def _upgrade_case(case: dict[str, Any]) -> dict[str, Any]:
    raw_details = case.get("details")
    details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
    new: dict[str, Any] = {
        k: case[k] for k in ("workload", "device", "batch_size", "loader", "status", "error") if k in case
    }
    failed = details.get("failed_passes", [])
    new["failed_passes"] = failed if isinstance(failed, list) else []
    if case.get("status") != "ok":
        return new
    new["samples_per_unit"] = case.get("samples_per_call")
    spec = WORKLOAD_BY_NAME.get(str(case.get("workload")))
    samples = case.get("samples_s")
    if spec is None or not isinstance(samples, list):
        new["passes"] = [{"index": 0, "samples_s": samples}]
        return new
    if spec.timing is Timing.ROUNDS:
        passes = _split_rounds(samples, details)
    elif spec.timing is Timing.EPOCHS:
        passes = _split_epochs(samples, details)
    else:
        passes = [_training_run(case, details)]
    if passes and all(
        isinstance(case.get(old), int) for old in ("host_rss_start_bytes", "host_rss_peak_bytes")
    ):
        passes[0]["memory"] = {new_name: case.get(old) for old, new_name in V1_MEMORY.items()}
    new["passes"] = passes
    return new


def _split_rounds(samples: list[Any], details: dict[str, Any]) -> list[dict[str, Any]]:
    indices, rounds = details.get("pass_index"), details.get("pass_rounds")
    calibration = {"calls_per_round": details.get("calls_per_round"), "timer": details.get("timer")}
    consistent = (
        isinstance(indices, list)
        and isinstance(rounds, list)
        and len(indices) == len(rounds)
        and all(isinstance(x, int) and x >= 0 for x in [*indices, *rounds])
        and sum(rounds) == len(samples)
    )
    if not consistent or not isinstance(indices, list) or not isinstance(rounds, list):
        return [{"index": 0, "samples_s": samples, **calibration}]
    passes, start = [], 0
    for position, (index, count) in enumerate(zip(indices, rounds, strict=True)):
        if count:
            passes.append({"index": index, "samples_s": samples[start : start + count], **(
                calibration if position == 0 else {})})  # fmt: skip
        start += count
    return passes


def _split_epochs(samples: list[Any], details: dict[str, Any]) -> list[dict[str, Any]]:
    indices, data = details.get("pass_index"), details.get("data_seconds")
    batches = details.get("batches_per_epoch")
    if not (isinstance(indices, list) and len(indices) == len(samples)):
        indices = [0] * len(samples)
    if not (isinstance(data, list) and len(data) == len(samples)):
        data = None
    passes: dict[Any, dict[str, Any]] = {}
    for position, (index, seconds) in enumerate(zip(indices, samples, strict=True)):
        record = passes.setdefault(index, {"index": index, "samples_s": [], "batches": batches})
        record["samples_s"].append(seconds)
        if data is not None:
            record.setdefault("data_seconds", []).append(data[position])
            record["data_timer"] = "host clock"
    return list(passes.values())


def _training_run(case: dict[str, Any], details: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": 0,
        "seed": 0,
        "samples_s": case.get("samples_s"),
        "test_accuracy": case.get("test_accuracy"),
        "mean_loss": details.get("mean_loss"),
        "eval_seconds": details.get("eval_seconds"),
        "data_seconds": details.get("data_seconds"),
        "data_timer": "host clock",
    }
