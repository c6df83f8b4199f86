"""What a run measures: its options, their defaults and rules, the cases they plan and their order.

The full and `--quick` profiles are defined once here (`FULL`, `QUICK`); the CLI fills unset options
from them and writes its help text from them. The rules of a run across processes (`parallel_options`)
live here too, so every entry point applies the same ones. Torch-free, like the workload table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from itertools import product
from typing import Any, ClassVar

from bench.core.catalog import CHAPTER_BATCH_SIZE, LOADERS, PARALLEL_WORKLOADS, Timing, Workload, workload
from bench.core.errors import UsageError
from bench.core.keys import CaseKey
from bench.core.models import DEFAULT_MODEL, model_info


def peak_key(device: str, threads: int | None) -> str:
    """Where a device's measured peaks are kept in env.peaks: per thread count on the CPU."""
    return device if threads is None else f"{device}/threads={threads}"


@dataclass(frozen=True)
class Profile:
    """The defaults of one kind of run."""

    devices: str  # "all": the CPU and every visible CUDA device; "cpu": the CPU only
    batch_sizes: tuple[int, ...]
    epochs: int
    epoch_repeats: int
    train_runs: int
    passes: int
    max_time: float
    torchvision_batch_sizes: tuple[int, ...] | None  # the chapter's DataLoader epoch only at these sizes


FULL = Profile(
    devices="all",
    batch_sizes=(16, CHAPTER_BATCH_SIZE, 256, 1024, 4096),
    epochs=10,
    epoch_repeats=3,
    train_runs=3,
    passes=3,
    max_time=1.0,
    torchvision_batch_sizes=None,
)
# The chapter's DataLoader costs the same per image at any batch size (about 7 s an epoch on a
# 2-core machine), so a smoke run measures it once, at the chapter's batch size.
QUICK = Profile(
    devices="cpu",
    batch_sizes=(CHAPTER_BATCH_SIZE, 1024),
    epochs=1,
    epoch_repeats=1,
    train_runs=1,
    passes=1,
    max_time=0.25,
    torchvision_batch_sizes=(CHAPTER_BATCH_SIZE,),
)
DEVICES_TEXT = {"all": "cpu and every visible CUDA device", "cpu": "cpu"}


def default_text(name: str) -> str:
    """`default: X; with --quick: Y` for an option of the profiles, as the help shows it."""

    def shown(profile: Profile) -> str:
        value = getattr(profile, name)
        if name == "devices":
            return DEVICES_TEXT[value]
        if isinstance(value, tuple):
            return ",".join(map(str, value))
        return "every batch size" if value is None else f"{value:g}"

    full, quick = shown(FULL), shown(QUICK)
    return f"default: {full}" + (f"; with --quick: {quick}" if quick != full else "")


@dataclass(frozen=True)
class Options:
    """Everything that decides what a run measures; stored in results.json as `options`."""

    devices: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    workloads: tuple[str, ...]
    loaders: tuple[str, ...] = LOADERS
    torchvision_batch_sizes: tuple[int, ...] | None = None  # None: every batch size
    train_loader: str = "resident"
    epochs: int = FULL.epochs
    epoch_repeats: int = FULL.epoch_repeats
    train_runs: int = FULL.train_runs
    target_accuracy: float = 0.80
    max_time: float = FULL.max_time  # per step case, all passes together
    min_rounds: int = 5
    passes: int = FULL.passes
    quick: bool = False
    modes: tuple[str, ...] = ("eager",)
    threads: tuple[int | None, ...] = (None,)  # None: torch's own default
    nproc: int = 1  # processes per data-parallel case (torchrun); 1: none
    side_by_side: bool = False  # with nproc: also nproc independent copies at once
    retry_contended: int = 0  # passes added at the end for a case with contended passes (bench run: 1)
    profile: bool = False  # a few steps of each case under torch.profiler after its timed passes
    # the chapter's DataLoader's settings to measure (each combination a case): 0 workers, pageable memory
    loader_workers: tuple[int, ...] = (0,)
    pin_memory: tuple[bool, ...] = (False,)
    persistent_workers: bool = False  # with workers: keep them between epochs
    prefetch_factor: int | None = None  # with workers: batches each prefetches (None: torch's 2)
    models: tuple[str, ...] = (DEFAULT_MODEL,)  # bench.core.models names, or the user's file.py:build
    model_batch_sizes: bool = False  # each model at its own default batch sizes (no --batch-sizes given)

    __pydantic_config__: ClassVar[dict[str, Any]] = {"allow_inf_nan": False, "extra": "forbid"}

    def __post_init__(self) -> None:
        counts = (self.epochs, self.epoch_repeats, self.train_runs, self.min_rounds, self.passes)
        if min(counts) < 1 or not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError("epochs, repeats, runs, rounds, passes and batch sizes are at least 1")
        if not 0 <= self.retry_contended <= 10:
            raise ValueError("retry_contended is between 0 and 10")
        if not 0 < self.max_time <= 3600 or not 0 < self.target_accuracy <= 1:
            raise ValueError("max_time is in (0, 3600] s and target_accuracy in (0, 1]")
        if not self.loader_workers or min(self.loader_workers) < 0 or not self.pin_memory:
            raise ValueError("loader_workers are at least 0, and loader_workers and pin_memory are not empty")
        if self.prefetch_factor is not None and self.prefetch_factor < 1:
            raise ValueError("prefetch_factor is at least 1")
        if not self.models:
            raise ValueError("a run measures at least one model")


def options_from(profile: Profile, **given: Any) -> dict[str, Any]:
    """Option values: each given one (not None), else the profile's default."""
    values = {name: getattr(profile, name) for name in asdict(profile) if name != "devices"}
    values.update({name: value for name, value in given.items() if value is not None})
    return values


def variants(spec: Workload, options: Options) -> tuple[str | None, ...]:
    """The loaders a workload is planned with: none, the epoch loaders, or the training loader."""
    if spec.variants == "loaders":
        return options.loaders
    if spec.variants == "train_loader":
        return (options.train_loader,)
    return (None,)


def chapter_loader_planned(options: Options, loader: str | None, batch_size: int) -> bool:
    """False for the chapter's DataLoader at a batch size the profile leaves out (--quick: batch 64 only)."""
    limited = options.torchvision_batch_sizes
    return loader != "torchvision" or limited is None or batch_size in limited


def loader_settings(options: Options, loader: str | None) -> list[dict[str, Any]]:
    """The chapter's DataLoader's settings a case of `loader` is planned with: every combination of
    workers and pinned memory asked for (persistence and prefetching only where there are workers, as
    torch requires); other loaders have none."""
    if loader != "torchvision":
        return [{}]
    settings = []
    for workers in options.loader_workers:
        for pin in options.pin_memory:
            with_workers = {
                "persistent_workers": options.persistent_workers,
                "prefetch_factor": options.prefetch_factor,
            }
            settings.append({"workers": workers, "pin_memory": pin, **(with_workers if workers else {})})
    return settings


def batch_sizes_for(model: str, options: Options) -> tuple[int, ...]:
    """The batch sizes a model is planned at: the run's, or the model's own defaults where the user
    gave none (the MLP's defaults are the profile's, so its plan is the chapter's)."""
    if not options.model_batch_sizes or model == DEFAULT_MODEL:
        return options.batch_sizes
    return model_info(model).batch_sizes


def solo_device(device: str) -> str:
    """The device a one-process case of a multi-process device runs on: `cuda` (one GPU per rank) -> cuda:0."""
    return "cuda:0" if device == "cuda" else device


def parallel_plan(options: Options) -> list[CaseKey]:
    """With --nproc N: per workload, loader and batch size, the one-process case the scaling is set
    against, the N-process data-parallel case, N independent copies side by side (if asked), and for
    training the one-process run at the global batch (N times the batch) its accuracy is checked against.

    Every process runs at the same thread count on the CPU (`options.threads`, each rank's share).
    """
    n = options.nproc
    cases: list[CaseKey] = []
    for device in options.devices:
        threads = options.threads[0] if device == "cpu" else None
        solo = solo_device(device)
        for model in options.models:
            for name in options.workloads:
                spec = workload(name)
                for loader in variants(spec, options):
                    for batch_size in batch_sizes_for(model, options):
                        if not chapter_loader_planned(options, loader, batch_size):
                            continue
                        one = CaseKey(name, solo, batch_size, loader, threads=threads, model=model)
                        cases.append(one)
                        if spec.timing is Timing.RUNS:
                            cases.append(replace(one, batch_size=batch_size * n))
                        cases.append(replace(one, device=device, world_size=n))
                        if options.side_by_side and spec.timing is not Timing.RUNS:
                            cases.append(replace(one, device=device, side_by_side=n))
    return list(dict.fromkeys(cases))


def plan(options: Options) -> list[CaseKey]:
    """Cases in execution order: device, threads, model, workload, loader, mode, batch size."""
    if options.nproc > 1:
        return parallel_plan(options)
    cases = []
    for device in options.devices:
        thread_counts = options.threads if device == "cpu" else (None,)
        for threads, model, name in product(thread_counts, options.models, options.workloads):
            for loader, mode in product(variants(workload(name), options), options.modes):
                for batch_size in batch_sizes_for(model, options):
                    if not chapter_loader_planned(options, loader, batch_size):
                        continue
                    cases += [
                        CaseKey(name, device, batch_size, loader, mode, threads, model=model, **setting)
                        for setting in loader_settings(options, loader)
                    ]
    return cases


@dataclass(frozen=True)
class Item:
    """One execution: a case in one pass. Epochs and training runs: how many, and the first's number."""

    key: CaseKey
    pass_index: int
    repeats: int = 0
    first: int = 0


def share_of_pass(total: int, passes: int, pass_index: int) -> int:
    """Spreads `total` epochs or runs over the passes: 3 over 3 passes is one each."""
    return total // passes + (1 if pass_index < total % passes else 0)


def schedule(cases: list[CaseKey], options: Options) -> list[Item]:
    """Every pass visits every case; epochs and training runs are shared out over the passes.

    Spreading a case over passes puts its samples at different moments of the run, so drift of the
    machine shows up as spread instead of as a difference between cases measured at other times
    (the epoch-versus-train_step ratio compares exactly such cases).
    """
    totals = {Timing.EPOCHS: options.epoch_repeats, Timing.RUNS: options.train_runs}
    items = []
    for pass_index in range(options.passes):
        for key in cases:
            timing = workload(key.workload).timing
            if timing is Timing.ROUNDS:
                items.append(Item(key, pass_index))
                continue
            total = totals[timing]
            count = share_of_pass(total, options.passes, pass_index)
            if count:
                first = sum(share_of_pass(total, options.passes, p) for p in range(pass_index))
                items.append(Item(key, pass_index, count, first))
    for retry in range(options.retry_contended):  # slots: used only by cases with contended passes
        for key in cases:
            timing = workload(key.workload).timing
            first = totals[timing] + retry if timing is not Timing.ROUNDS else 0
            items.append(Item(key, options.passes + retry, 0 if timing is Timing.ROUNDS else 1, first))
    return items


def is_retry(item: Item, options: Options) -> bool:
    """A slot after the planned passes, for a case whose passes were contended."""
    return item.pass_index >= options.passes


def parallel_options(
    values: dict[str, Any],
    *,
    nproc: int,
    device: str,
    workloads: tuple[str, ...] | None,
    loaders: tuple[str, ...] | None,
    modes: tuple[str, ...],
    threads_given: bool,
    local_processes: int,
    usable_cpus: int,
    visible_gpus: int,
    side_by_side: bool,
    **rest: Any,
) -> Options:
    """Options of a run across `nproc` processes: one device type, eager, the workloads that run across
    processes, the resident loader, and on the CPU each process's share of the usable CPUs as its thread
    count. `workloads`/`loaders`: as given, or None where the user left the option out."""
    if threads_given:
        raise UsageError(
            "--threads cannot be combined with --nproc", hint="each process gets an equal share of the CPUs"
        )
    if modes != ("eager",):
        raise UsageError("cases across processes run eager", hint="leave --modes out with --nproc")
    if workloads is None:
        workloads = PARALLEL_WORKLOADS
    elif set(workloads) - set(PARALLEL_WORKLOADS):
        wrong = ", ".join(sorted(set(workloads) - set(PARALLEL_WORKLOADS)))
        raise UsageError(
            f"--nproc runs {', '.join(PARALLEL_WORKLOADS)}, not {wrong}", hint="choose among those"
        )
    if loaders is not None and "torchvision" in loaders:
        raise UsageError("epochs across processes use the resident loader", hint="--loaders resident")
    if device not in ("cpu", "cuda"):
        raise UsageError(
            f"--devices {device!r} with --nproc: give cpu (gloo) or cuda (NCCL, one GPU per process)",
            hint="--devices cpu or --devices cuda",
        )
    if device == "cuda" and visible_gpus < local_processes:
        raise UsageError(
            f"--devices cuda with {local_processes} processes on this machine needs {local_processes} GPUs; "
            f"{visible_gpus} visible",
            hint="lower --nproc, or use --devices cpu",
        )
    threads = (max(1, usable_cpus // local_processes),) if device == "cpu" else (None,)
    values = {k: v for k, v in values.items() if k != "torchvision_batch_sizes"}
    return Options(
        devices=(device,),
        workloads=workloads,
        loaders=("resident",),
        train_loader="resident",
        threads=threads,
        nproc=nproc,
        side_by_side=side_by_side,
        **values,
        **rest,
    )
