"""`bench run`: what to measure, from the command line to validated Options; the job is bench.app's.

Values are checked before anything imports torch, so a typo costs a fraction of a second; the
devices come last, since naming a GPU needs torch to know what this machine has.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.cli.args import (
    REDACT_HELP,
    check_counts,
    comma_list,
    cpu_share_warnings,
    finite_float,
    folder_path,
    parse_batch_sizes,
    parse_choices,
    parse_loader_workers,
    parse_switches,
    parse_threads,
    whole_usable_cpus,
)
from bench.core.catalog import DATA_DIR_ENV, DATASETS, LOADERS, MODES, WORKLOADS
from bench.core.envvars import check_environment, env_int
from bench.core.errors import UsageError
from bench.core.models import DEFAULT_MODEL, MODELS, check_model_name
from bench.core.plan import FULL, QUICK, Options, default_text, options_from, parallel_options

HELP = "benchmark models (the chapter's MLP by default) across devices, batch sizes and workloads"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        default=DEFAULT_MODEL,
        help=f"comma-separated from {', '.join(MODELS)}, or all, or your own as path/to/file.py:build or "
        "package.module:build; each model runs at its own default batch sizes unless --batch-sizes is "
        f"given (default: {DEFAULT_MODEL}, the chapter's model)",
    )
    parser.add_argument(
        "--devices", help=f"comma-separated: cpu, cuda (all GPUs), cuda:N ({default_text('devices')})"
    )
    parser.add_argument("--batch-sizes", help=f"comma-separated ({default_text('batch_sizes')})")
    parser.add_argument(
        "--workloads", default="all", help=f"comma-separated from {', '.join(WORKLOADS)} (default: all)"
    )
    parser.add_argument(
        "--modes",
        default="eager",
        help=f"execution modes, comma-separated from {', '.join(MODES)}, or all; a mode a device cannot "
        "run is a skipped cell with the reason, a mode that computes something else than eager an invalid "
        "one (default: eager, the chapter's code)",
    )
    parser.add_argument(
        "--threads",
        help="CPU intra-op thread counts, comma-separated, or sweep for 1, 2, 4, ... up to the usable CPUs; "
        "each count is a case of its own (default: torch's own choice)",
    )
    parser.add_argument(
        "--loaders",
        default=",".join(LOADERS),
        help="loaders for the epoch workload: torchvision (the chapter's DataLoader) and/or resident "
        f"(data kept on the device) (default: {','.join(LOADERS)}; with --quick the chapter's DataLoader "
        f"only at batch {','.join(map(str, QUICK.torchvision_batch_sizes or ()))})",
    )
    parser.add_argument(
        "--train-loader",
        choices=LOADERS,
        default="resident",
        help="loader for the train workload (default: resident; torchvision runs the chapter's pipeline)",
    )
    parser.add_argument(
        "--dataset", choices=DATASETS, default="auto", help="data set (default: auto: MNIST, else synthetic)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help=f"where the data sets live or are downloaded to (default: ${DATA_DIR_ENV}, else ~/.cache/torch-bench/data)",
    )
    parser.add_argument(
        "--no-download", action="store_true", help="never download a data set (default: download if missing)"
    )
    parser.add_argument("--epochs", type=int, help=f"epochs of each training run ({default_text('epochs')})")
    parser.add_argument(
        "--train-runs",
        type=int,
        help="independent training runs per train case, each from its own seed; `compare` uses them as "
        f"its units ({default_text('train_runs')})",
    )
    parser.add_argument(
        "--epoch-repeats", type=int, help=f"timed epochs per epoch case ({default_text('epoch_repeats')})"
    )
    parser.add_argument(
        "--target-accuracy",
        type=finite_float,
        default=0.80,
        help="test accuracy the train workload reports the time to reach (default: 0.80)",
    )
    parser.add_argument(
        "--max-time",
        type=finite_float,
        help="seconds pytest-benchmark spends timing each case timed in rounds, all passes together "
        f"({default_text('max_time')})",
    )
    parser.add_argument(
        "--passes",
        type=int,
        help="passes over the cases, spread through the run so drift shows in the samples and `compare` "
        f"can test across passes; --max-time is split between them ({default_text('passes')})",
    )
    parser.add_argument(
        "--retry-contended",
        type=int,
        default=1,
        metavar="N",
        help="passes added at the end of the sweep for each case whose passes were contended (its threads "
        "waited for CPUs other work held); both records are kept and its figures use the clean passes "
        "(default: 1; 0 turns it off)",
    )
    parser.add_argument(
        "--loader-workers",
        default="0",
        metavar="LIST",
        help="the chapter's DataLoader's num_workers, comma-separated, each a case of its own, capped at the "
        "usable CPUs (default: 0, the chapter's)",
    )
    parser.add_argument(
        "--pin-memory",
        default="off",
        metavar="off,on",
        help="the chapter's DataLoader with pinned memory and non_blocking copies: off, on or both; on a CPU "
        "device `on` is a skipped cell (default: off)",
    )
    parser.add_argument(
        "--persistent-workers",
        action="store_true",
        help="with workers: keep them alive between epochs (default: off)",
    )
    parser.add_argument(
        "--prefetch-factor",
        type=int,
        metavar="N",
        help="with workers: batches each worker loads ahead (default: torch's 2)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after each case's timed passes, profile a few of its steps (torch.profiler, never timed): a "
        "Chrome/Perfetto trace and the op table as CSV per case in profiles/ (default: off)",
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="N processes per case, started with torchrun: each of train_step, epoch and train runs "
        "data-parallel (DistributedDataParallel; gloo on --devices cpu, each process an equal share of the "
        "CPUs; NCCL on --devices cuda, one GPU per process) beside its one-process case, for the scaling "
        "efficiency (default: 1, no processes)",
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="with --nproc N: also run N independent one-process copies of each case at the same moment, "
        "each with its own model and data, to show contention for the host, memory and PCIe (default: off)",
    )
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)  # the ranks, after a failure
    parser.add_argument("--redact", action="store_true", help=REDACT_HELP)
    parser.add_argument(
        "--oversubscribe",
        action="store_true",
        help="allow more processes than usable CPUs, or threads far above them (default: refused)",
    )
    parser.add_argument("--out", type=folder_path, help="run folder (default: results/<date>-<host>-<id>/)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke-sized run for CI and first contact: the --quick defaults above (default: off)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="print the install check before benchmarking and stop if it fails (default: off; the check's "
        "facts are always recorded)",
    )
    parser.add_argument(
        "--require", action="append", choices=["cuda"], default=[], help="with --check: as for `bench check`"
    )
    parser.add_argument(
        "--plot", action="store_true", help="also draw PNG plots (needs matplotlib) (default: off)"
    )


def parse_models(text: str) -> tuple[str, ...]:
    """`mlp,cnn` or `all` (every built-in model) or a user's `file.py:build`, each checked by name only
    here (a user spec is imported and tried before anything is measured, by bench.app)."""
    items = comma_list(text, "--models", "mlp,cnn")
    if items == ["all"]:
        return MODELS
    return tuple(dict.fromkeys(check_model_name(item) for item in items))


def ranks_in_group() -> int | None:
    """The world size when torchrun started this process as one of several ranks, else None."""
    size = env_int("WORLD_SIZE", 1)
    return size if size > 1 else None


def run_options(args: argparse.Namespace) -> Options:
    """Turns `bench run` arguments into validated Options."""
    profile = QUICK if args.quick else FULL
    values = options_from(
        profile,
        batch_sizes=parse_batch_sizes(args.batch_sizes) if args.batch_sizes is not None else None,
        epochs=args.epochs,
        epoch_repeats=args.epoch_repeats,
        train_runs=args.train_runs,
        max_time=args.max_time,
        passes=args.passes,
    )
    check_counts(values)
    if not 0 <= args.retry_contended <= 10:
        raise UsageError(f"--retry-contended {args.retry_contended} must be between 0 and 10")
    values["retry_contended"] = args.retry_contended
    values["profile"] = args.profile
    values["loader_workers"] = parse_loader_workers(args.loader_workers)
    values["pin_memory"] = parse_switches(args.pin_memory, "--pin-memory")
    if args.prefetch_factor is not None and args.prefetch_factor < 1:
        raise UsageError(f"--prefetch-factor {args.prefetch_factor} must be at least 1")
    if (args.prefetch_factor is not None or args.persistent_workers) and max(values["loader_workers"]) == 0:
        raise UsageError(
            "--prefetch-factor and --persistent-workers apply to DataLoader workers",
            hint="add --loader-workers 2",
        )
    values["persistent_workers"], values["prefetch_factor"] = args.persistent_workers, args.prefetch_factor
    if not 0 < values["max_time"] <= 600:
        raise UsageError(f"--max-time {values['max_time']:g} must be between 0 and 600 seconds")
    if not 0 < args.target_accuracy <= 1:
        raise UsageError(
            f"--target-accuracy {args.target_accuracy:g} must be a fraction in (0, 1]",
            hint="e.g. 0.8 for 80%",
        )
    models = parse_models(args.models)
    workloads = parse_choices(args.workloads, WORKLOADS, "--workloads", "workload")
    loaders = parse_choices(args.loaders, LOADERS, "--loaders", "loader")
    modes = parse_choices(args.modes, MODES, "--modes", "mode")
    threads = parse_threads(args.threads) if args.threads is not None else (None,)
    nproc = ranks_in_group() or args.nproc
    if nproc < 1:
        raise UsageError(f"--nproc {nproc} must be at least 1")
    on_cpu = args.devices is None or "cpu" in args.devices.lower()
    local = env_int("LOCAL_WORLD_SIZE", nproc) if ranks_in_group() else nproc
    for line in cpu_share_warnings(threads, local, on_cpu, whole_usable_cpus(), args.oversubscribe):
        print(f"warning: {line}", file=sys.stderr)
    if args.side_by_side and nproc < 2:
        raise UsageError("--side-by-side needs --nproc 2 or more (how many copies run side by side)")
    values["models"] = models
    values["model_batch_sizes"] = args.batch_sizes is None and not args.quick
    if nproc > 1:
        return _parallel(args, values, workloads, loaders, modes, nproc)
    limited = values.pop("torchvision_batch_sizes")
    if limited is not None and not set(limited) & set(values["batch_sizes"]):
        limited = None  # the quick profile's limit would plan no chapter epoch at these batch sizes
    return Options(
        devices=tuple(run_devices(args, profile.devices)),
        workloads=workloads,
        loaders=loaders,
        train_loader=args.train_loader,
        target_accuracy=args.target_accuracy,
        torchvision_batch_sizes=limited,
        quick=args.quick,
        modes=modes,
        threads=threads,
        **values,
    )


def _parallel(
    args: argparse.Namespace,
    values: dict[str, object],
    workloads: tuple[str, ...],
    loaders: tuple[str, ...],
    modes: tuple[str, ...],
    nproc: int,
) -> Options:
    device = (args.devices or "cpu").strip().lower()
    gpus = 0
    if device == "cuda":
        from bench.measure.devices import visible_cuda_devices

        gpus = len(visible_cuda_devices())
    return parallel_options(
        values,
        nproc=nproc,
        device=device,
        workloads=None if args.workloads == "all" else workloads,
        loaders=None if args.loaders == ",".join(LOADERS) else loaders,
        modes=modes,
        threads_given=args.threads is not None,
        local_processes=env_int("LOCAL_WORLD_SIZE", nproc),
        usable_cpus=whole_usable_cpus(),
        visible_gpus=gpus,
        side_by_side=args.side_by_side,
        target_accuracy=args.target_accuracy,
        quick=args.quick,
    )


def run_devices(args: argparse.Namespace, default: str) -> list[str]:
    from bench.measure.devices import default_devices, parse_devices

    if args.devices is not None:
        comma_list(args.devices, "--devices", "cpu,cuda:0")
        return parse_devices(args.devices)
    return ["cpu"] if default == "cpu" else default_devices()


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from bench import app

    check_environment()  # every variable a run or its ranks read, before anything starts
    options = run_options(args)  # validation first: a typo fails here, before torch is imported
    request = app.RunRequest(
        options=options,
        argv=tuple(argv),
        out=args.out,
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=not args.no_download,
        plot=args.plot,
        check=args.check,
        require=tuple(args.require),
        resume=args.resume,
        redact=args.redact,
    )
    return app.rank_job(request) if ranks_in_group() else app.run_job(request)
