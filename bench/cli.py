"""The `bench` command: parses arguments, validates them, dispatches. Measures and formats nothing itself.

Exit status: 0 success; 1 a check failed, a case errored, or `compare --fail-above` found a
slowdown; 2 bad input (nothing was measured or changed); 130 a run stopped by Ctrl-C (its
finished cases are saved and rendered).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import __version__
from bench.errors import BenchError, UsageError

if TYPE_CHECKING:
    from bench.plan import Options
    from bench.results import Run

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def comma_list(text: str, option: str, example: str) -> list[str]:
    """The entries of a comma-separated option; an empty list is a UsageError, never "the default"."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError(f"{option} is empty", hint=f"give one or more values, e.g. {option} {example}")
    return items


def parse_counts(text: str, option: str, what: str, example: str) -> tuple[int, ...]:
    """`16,64` -> (16, 64): positive whole numbers, in the order given, without repeats."""
    counts: list[int] = []
    for item in comma_list(text, option, example):
        try:
            count = int(item)
        except ValueError:
            raise UsageError(
                f"{what} {item!r} is not a whole number", hint=f"e.g. {option} {example}"
            ) from None
        if count < 1:
            raise UsageError(f"{what} {count} must be at least 1", hint=f"e.g. {option} {example}")
        if count not in counts:
            counts.append(count)
    return tuple(counts)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    return parse_counts(text, "--batch-sizes", "batch size", "16,64,256")


def parse_choices(text: str, valid: Sequence[str], option: str, what: str) -> tuple[str, ...]:
    items = comma_list(text, option, ",".join(valid[:2]))
    if items == ["all"]:
        return tuple(valid)
    unknown = [item for item in items if item not in valid]
    if unknown:
        shown = ", ".join(repr(item) for item in unknown)
        raise UsageError(f"unknown {what} {shown}", hint=f"choose from: {', '.join(valid)} (or all)")
    return tuple(dict.fromkeys(items))


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each command's own parser (so an unknown option prints that command's usage)."""
    from bench.catalog import DATA_DIR_ENV, DATASETS, LOADERS, MODES, WORKLOADS
    from bench.compare import MIN_EFFECT
    from bench.plan import QUICK, default_text

    parser = argparse.ArgumentParser(
        prog="bench",
        description="Check a PyTorch install and benchmark the textbook MNIST MLP on every device.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check", help="check the install: versions, devices, real computations on each"
    )
    check.add_argument(
        "--json", action="store_true", help="print the facts and verdicts as JSON (default: a table)"
    )
    check.add_argument(
        "--require",
        action="append",
        choices=["cuda"],
        default=[],
        help="make a missing capability a failure: `cuda` fails without a usable CUDA device (default: none)",
    )

    run = commands.add_parser("run", help="benchmark the MLP across devices, batch sizes and workloads")
    run.add_argument(
        "--devices", help=f"comma-separated: cpu, cuda (all GPUs), cuda:N ({default_text('devices')})"
    )
    run.add_argument("--batch-sizes", help=f"comma-separated ({default_text('batch_sizes')})")
    run.add_argument(
        "--workloads", default="all", help=f"comma-separated from {', '.join(WORKLOADS)} (default: all)"
    )
    run.add_argument(
        "--modes",
        default="eager",
        help=f"execution modes, comma-separated from {', '.join(MODES)}, or all; a mode a device cannot "
        "run is a skipped cell with the reason, a mode that computes something else than eager an invalid "
        "one (default: eager, the chapter's code)",
    )
    run.add_argument(
        "--threads",
        help="CPU intra-op thread counts, comma-separated, or sweep for 1, 2, 4, ... up to the usable CPUs; "
        "each count is a case of its own (default: torch's own choice)",
    )
    run.add_argument(
        "--loaders",
        default=",".join(LOADERS),
        help="loaders for the epoch workload: torchvision (the chapter's DataLoader) and/or resident "
        f"(data kept on the device) (default: {','.join(LOADERS)}; with --quick the chapter's DataLoader "
        f"only at batch {','.join(map(str, QUICK.torchvision_batch_sizes or ()))})",
    )
    run.add_argument(
        "--train-loader",
        choices=LOADERS,
        default="resident",
        help="loader for the train workload (default: resident; torchvision runs the chapter's pipeline)",
    )
    run.add_argument(
        "--dataset", choices=DATASETS, default="auto", help="data set (default: auto: MNIST, else synthetic)"
    )
    run.add_argument(
        "--data-dir",
        type=Path,
        help=f"where the data sets live or are downloaded to (default: ${DATA_DIR_ENV}, else ~/.cache/torch-bench/data)",
    )
    run.add_argument(
        "--no-download", action="store_true", help="never download a data set (default: download if missing)"
    )
    run.add_argument("--epochs", type=int, help=f"epochs of each training run ({default_text('epochs')})")
    run.add_argument(
        "--train-runs",
        type=int,
        help="independent training runs per train case, each from its own seed; `compare` uses them as "
        f"its units ({default_text('train_runs')})",
    )
    run.add_argument(
        "--epoch-repeats", type=int, help=f"timed epochs per epoch case ({default_text('epoch_repeats')})"
    )
    run.add_argument(
        "--target-accuracy",
        type=float,
        default=0.80,
        help="test accuracy the train workload reports the time to reach (default: 0.80)",
    )
    run.add_argument(
        "--max-time",
        type=float,
        help="seconds pytest-benchmark spends timing each case timed in rounds, all passes together "
        f"({default_text('max_time')})",
    )
    run.add_argument(
        "--passes",
        type=int,
        help="passes over the cases, spread through the run so drift shows in the samples and `compare` "
        f"can test across passes; --max-time is split between them ({default_text('passes')})",
    )
    run.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="N processes per case, started with torchrun: each of train_step, epoch and train runs "
        "data-parallel (DistributedDataParallel; gloo on --devices cpu, each process an equal share of the "
        "CPUs; NCCL on --devices cuda, one GPU per process) beside its one-process case, for the scaling "
        "efficiency (default: 1, no processes)",
    )
    run.add_argument(
        "--side-by-side",
        action="store_true",
        help="with --nproc N: also run N independent one-process copies of each case at the same moment, "
        "each with its own model and data, to show contention for the host, memory and PCIe (default: off)",
    )
    run.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)  # the ranks, after a failure
    run.add_argument("--out", type=Path, help="run folder (default: results/<date>-<host>-<id>/)")
    run.add_argument(
        "--quick",
        action="store_true",
        help="smoke-sized run for CI and first contact: the --quick defaults above (default: off)",
    )
    run.add_argument(
        "--check",
        action="store_true",
        help="print the install check before benchmarking and stop if it fails (default: off; the check's "
        "facts are always recorded)",
    )
    run.add_argument(
        "--require", action="append", choices=["cuda"], default=[], help="with --check: as for `bench check`"
    )
    run.add_argument(
        "--plot", action="store_true", help="also draw PNG plots (needs matplotlib) (default: off)"
    )

    report = commands.add_parser(
        "report",
        help="re-render the tables of a run; with several runs (from several machines), one table for them all",
    )
    report.add_argument(
        "targets", type=Path, nargs="+", metavar="RUN", help="run folders, or the results.json inside them"
    )
    report.add_argument(
        "--plot", action="store_true", help="also draw PNG plots (needs matplotlib) (default: off)"
    )
    report.add_argument(
        "--out",
        type=Path,
        help="with several runs: the folder for fleet.md, fleet.csv (and fleet.png) (default: "
        "results/fleet-<date>-<id>/)",
    )

    compare = commands.add_parser("compare", help="compare two runs case by case (B relative to A)")
    compare.add_argument("baseline", type=Path, help="run A: folder or results.json (the reference)")
    compare.add_argument("candidate", type=Path, help="run B: folder or results.json")
    compare.add_argument(
        "--fail-above",
        type=float,
        metavar="PCT",
        help="exit 1 if any case is significantly slower than A by more than PCT percent (default: never)",
    )
    compare.add_argument(
        "--min-effect",
        type=float,
        metavar="PCT",
        default=MIN_EFFECT * 100,
        help="the smallest change called slower or faster, either way, in percent; raise it on shared "
        "machines whose speed differs between processes (default: %(default)g, or the runs' noise level "
        "when that is larger)",
    )
    compare.add_argument(
        "--out", type=Path, help="also write the comparison as Markdown to this file (default: no)"
    )
    return parser, {"check": check, "run": run, "report": report, "compare": compare}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the command's own usage, not the top level's
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        if args.command == "check":
            return cmd_check(args)
        if args.command == "run":
            return cmd_run(args, argv)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "compare":
            return cmd_compare(args)
    except BenchError as error:
        print(f"bench {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"bench {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    raise AssertionError(args.command)


def cmd_check(args: argparse.Namespace) -> int:
    from bench.check import run_check
    from bench.report import check_table

    report = run_check(require=tuple(args.require))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(check_table(report))
    return EXIT_OK if report.passed else EXIT_FAILED


def run_options(args: argparse.Namespace) -> Options:
    """Turns `bench run` arguments into validated Options.

    Values are checked before anything imports torch, so a typo costs a fraction of a second;
    the devices come last, since naming a GPU needs torch to know what this machine has.
    """
    from bench.catalog import LOADERS, MODES, WORKLOADS
    from bench.plan import FULL, QUICK, Options, options_from

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
    for name in ("epochs", "epoch_repeats", "train_runs", "passes"):
        if values[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} {values[name]} must be at least 1")
    if not 0 < values["max_time"] <= 600:
        raise UsageError(f"--max-time {values['max_time']:g} must be between 0 and 600 seconds")
    if not 0 < args.target_accuracy <= 1:
        raise UsageError(
            f"--target-accuracy {args.target_accuracy:g} must be a fraction in (0, 1]",
            hint="e.g. 0.8 for 80%",
        )
    workloads = parse_choices(args.workloads, WORKLOADS, "--workloads", "workload")
    loaders = parse_choices(args.loaders, LOADERS, "--loaders", "loader")
    modes = parse_choices(args.modes, MODES, "--modes", "mode")
    threads = parse_threads(args.threads) if args.threads is not None else (None,)
    nproc = ranks_in_group() or args.nproc
    if nproc < 1:
        raise UsageError(f"--nproc {nproc} must be at least 1")
    if args.side_by_side and nproc < 2:
        raise UsageError("--side-by-side needs --nproc 2 or more (how many copies run side by side)")
    if nproc > 1:
        return parallel_options(args, values, workloads, loaders, modes, nproc)
    limited = values["torchvision_batch_sizes"]
    if limited is not None and not set(limited) & set(values["batch_sizes"]):
        limited = None  # the quick profile's limit would plan no chapter epoch at these batch sizes
    values.pop("torchvision_batch_sizes")
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


def whole_usable_cpus() -> int:
    """Whole CPUs this process may use (at least one): what thread counts are divided from."""
    from bench.env import usable_cpus

    return max(1, int(usable_cpus()))


def parse_threads(text: str) -> tuple[int | None, ...]:
    """`1,2` -> (1, 2); `sweep` -> 1, 2, 4, ... up to the usable CPUs (and that count itself)."""
    if text.strip() == "sweep":
        cpus = whole_usable_cpus()
        counts = [2**i for i in range(cpus.bit_length()) if 2**i <= cpus]
        return tuple(dict.fromkeys([*counts, cpus]))
    return parse_counts(text, "--threads", "thread count", "1,2 or sweep")


def ranks_in_group() -> int | None:
    """The world size when torchrun started this process as one of several ranks, else None."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return size if size > 1 else None


def parallel_options(
    args: argparse.Namespace,
    values: dict[str, object],
    workloads: tuple[str, ...],
    loaders: tuple[str, ...],
    modes: tuple[str, ...],
    nproc: int,
) -> Options:
    """Options of a run across `nproc` processes: one device type, eager, the workloads that run across
    processes, the resident loader, and each process's share of the CPUs as its thread count."""
    from bench.catalog import LOADERS, PARALLEL_WORKLOADS
    from bench.plan import Options

    if args.threads is not None:
        raise UsageError(
            "--threads cannot be combined with --nproc", hint="each process gets an equal share of the CPUs"
        )
    if modes != ("eager",):
        raise UsageError("cases across processes run eager", hint="leave --modes out with --nproc")
    if args.workloads == "all":
        workloads = PARALLEL_WORKLOADS
    elif set(workloads) - set(PARALLEL_WORKLOADS):
        wrong = ", ".join(sorted(set(workloads) - set(PARALLEL_WORKLOADS)))
        raise UsageError(
            f"--nproc runs {', '.join(PARALLEL_WORKLOADS)}, not {wrong}", hint="choose among those"
        )
    if "torchvision" in loaders and args.loaders != ",".join(LOADERS):
        raise UsageError("epochs across processes use the resident loader", hint="--loaders resident")
    device = (args.devices or "cpu").strip().lower()
    if device not in ("cpu", "cuda"):
        raise UsageError(
            f"--devices {device!r} with --nproc: give cpu (gloo) or cuda (NCCL, one GPU per process)",
            hint="--devices cpu or --devices cuda",
        )
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(nproc)))
    if device == "cuda":
        from bench.devices import visible_cuda_devices

        gpus = len(visible_cuda_devices())
        if gpus < local:
            raise UsageError(
                f"--devices cuda with {local} processes on this machine needs {local} GPUs; {gpus} visible",
                hint="lower --nproc, or use --devices cpu",
            )
    threads = (max(1, whole_usable_cpus() // local),) if device == "cpu" else (None,)
    return Options(
        devices=(device,),
        workloads=workloads,
        loaders=("resident",),
        train_loader="resident",
        target_accuracy=args.target_accuracy,
        quick=args.quick,
        threads=threads,
        nproc=nproc,
        side_by_side=args.side_by_side,
        **{k: v for k, v in values.items() if k != "torchvision_batch_sizes"},  # type: ignore[arg-type]
    )


def run_devices(args: argparse.Namespace, default: str) -> list[str]:
    from bench.devices import default_devices, parse_devices

    if args.devices is not None:
        comma_list(args.devices, "--devices", "cpu,cuda:0")
        return parse_devices(args.devices)
    return ["cpu"] if default == "cpu" else default_devices()


def cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    options = run_options(args)  # validation first: a typo fails here, before torch is imported
    if ranks_in_group():
        return cmd_run_rank(args, argv, options)

    from bench import results as resultsmod
    from bench.catalog import dataset_display_name
    from bench.data import load_dataset

    if args.plot:
        from bench.plots import require_matplotlib

        require_matplotlib()
    run_id = resultsmod.new_run_id()
    folder = args.out if args.out else resultsmod.default_run_folder(Path("results"), run_id)
    resultsmod.prepare_run_folder(folder)
    facts, check = install_facts(args, argv)
    if args.check:
        from bench.report import check_table

        print(check_table(check))
        if not check.passed:
            print("bench run: the install check failed; nothing was measured", file=sys.stderr)
            _remove_if_empty(folder)
            return EXIT_FAILED
    elif not check.passed:
        failed = ", ".join(line.name for line in check.lines if line.verdict == "FAIL")
        print(f"warning: install check failed ({failed}); run `bench check` for details", file=sys.stderr)
    try:
        dataset = load_dataset(args.dataset, args.data_dir, download=not args.no_download)
    except BenchError:
        _remove_if_empty(folder)
        raise
    if dataset.info.note:
        print(f"dataset: {dataset_display_name(dataset.info.name)}: {dataset.info.note}", file=sys.stderr)
    print(f"bench run: {folder}", file=sys.stderr)
    if options.nproc > 1:
        from bench.launch import supervise
        from bench.report import write_tables

        run = supervise([*argv, "--no-download"], options.nproc, folder)
        write_tables(run, folder)
    else:
        from bench.runner import run_benchmarks

        run, folder = run_benchmarks(options, dataset, folder, facts, run_id)
    return finish_run(args, run, folder)


def install_facts(args: argparse.Namespace, argv: Sequence[str]) -> tuple[dict, Any]:
    """The facts every run records, with the install check's verdicts and the command line."""
    from bench import env as envmod
    from bench.check import run_check

    facts = envmod.collect_all()
    check = run_check(require=tuple(args.require), env=facts)
    facts["check"] = check.to_dict()["lines"]
    from bench.launch import COMMAND_LINE_ENV

    facts["command_line"] = os.environ.get(COMMAND_LINE_ENV) or shlex.join(["bench", *argv])
    return facts, check


def finish_run(args: argparse.Namespace, run: Run, folder: Path) -> int:
    from bench.report import console_summary

    if args.plot:
        _plot(run, folder)
    print(console_summary(run))
    print(f"\nResults: {folder}/ ({', '.join(written_files(run, folder))})")
    if run.state == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_FAILED if any(case.status == "error" for case in run.cases) else EXIT_OK


def cmd_run_rank(args: argparse.Namespace, argv: Sequence[str], options: Options) -> int:
    """One rank of several (torchrun set WORLD_SIZE): rank 0 sweeps and writes the folder, the others follow.

    A rank exits 0 whatever its cases did, so torchrun only reports real failures; a rank that fails
    leaves a fault report for the supervisor (bench.launch) before it goes.
    """
    from bench import results as resultsmod
    from bench.data import load_dataset
    from bench.distributed import World
    from bench.launch import FAULT_DIR_ENV, write_fault
    from bench.runner import run_benchmarks
    from bench.schema import load_run

    world = World.join(options.devices[0])
    try:
        if options.devices[0] == "cpu" and options.threads[0] is not None:
            import torch

            torch.set_num_threads(options.threads[0])
        run_id = resultsmod.new_run_id()
        folder = args.out if args.out else resultsmod.default_run_folder(Path("results"), run_id)
        restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        resume, facts = None, dict[str, Any]()
        if world.leader:
            if (args.resume or restarted) and (folder / resultsmod.RESULTS_FILE).exists():
                resume = load_run(folder)
            else:
                resultsmod.prepare_run_folder(folder)
                facts, _check = install_facts(args, argv)
                facts["processes"] = {"world_size": world.size, "nnodes": world.nnodes, "backend": world.backend,
                                      "threads_per_process": options.threads[0]}  # fmt: skip
        dataset = load_dataset(args.dataset, args.data_dir, download=not args.no_download and world.leader)
        run, folder = run_benchmarks(options, dataset, folder, facts, run_id, world=world, resume=resume)
        if world.leader and not os.environ.get(FAULT_DIR_ENV):  # torchrun started it, not bench run --nproc
            finish_run(args, run, folder)
        return EXIT_OK
    except BaseException as error:
        write_fault(error, world.rank)
        raise
    finally:
        world.leave()


def written_files(run: Run, folder: Path) -> list[str]:
    """The files of a run folder that exist, in the order people read them."""
    from bench.report import CSV_FILE, SUMMARY_FILE
    from bench.results import PYTEST_BENCHMARK_FILE, RESULTS_FILE

    names = [SUMMARY_FILE, CSV_FILE, RESULTS_FILE, PYTEST_BENCHMARK_FILE, *run.plots]
    return [name for name in names if (folder / name).exists()]


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _plot(run: Run, folder: Path) -> list[Path]:
    from bench import results as resultsmod
    from bench.plots import draw_plots
    from bench.report import write_tables

    paths = draw_plots(run, folder)
    run.plots = [path.name for path in paths]
    resultsmod.save_run(run, folder)
    write_tables(run, folder)
    return paths


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import console_summary, write_tables
    from bench.schema import load_run, resolve_results_path

    runs = [load_run(target) for target in args.targets]
    if args.plot:
        from bench.plots import require_matplotlib

        require_matplotlib()
    if len(runs) > 1:
        return report_fleet(args, runs)
    run, folder = runs[0], resolve_results_path(args.targets[0]).parent
    try:
        write_tables(run, folder)
        if args.plot:
            _plot(run, folder)
    except OSError as error:
        raise UsageError(
            f"cannot write the tables into {folder}: {error.strerror or error}",
            hint="copy the run folder somewhere writable and report that copy",
        ) from None
    print(console_summary(run))
    print(f"\nWrote {', '.join(str(folder / name) for name in ['summary.md', 'results.csv', *run.plots])}")
    return EXIT_OK


def report_fleet(args: argparse.Namespace, runs: list[Run]) -> int:
    from datetime import datetime

    from bench import results as resultsmod
    from bench.fleet import fleet_console, write_fleet

    folder = args.out or Path("results") / f"fleet-{datetime.now():%Y-%m-%d}-{resultsmod.new_run_id()}"
    try:
        paths = write_fleet(runs, folder, plot=args.plot)
    except OSError as error:
        raise UsageError(f"cannot write the fleet tables into {folder}: {error.strerror or error}") from None
    print(fleet_console(runs))
    print(f"\nWrote {', '.join(str(path) for path in paths)}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.compare import compare_runs, comparison_markdown
    from bench.schema import load_run

    if args.fail_above is not None and args.fail_above < 0:
        raise UsageError(f"--fail-above {args.fail_above:g} must be a percentage of at least 0")
    if not 0 <= args.min_effect < 1000:
        raise UsageError(f"--min-effect {args.min_effect:g} must be a percentage from 0 to below 1000")
    baseline, candidate = load_run(args.baseline), load_run(args.candidate)
    comparison = compare_runs(baseline, candidate, min_effect=args.min_effect / 100)
    text = comparison_markdown(comparison)
    if args.out:
        try:
            args.out.write_text(text + "\n", encoding="utf-8")
        except OSError as error:
            raise UsageError(
                f"cannot write {args.out}: {error.strerror or error}", hint="give --out a writable path"
            ) from None
    print(text)
    if args.fail_above is not None:
        slower = comparison.slowdowns_above(args.fail_above)
        if slower:
            names = "; ".join(f"{row.key.label()} {row.change_percent:+.1f}%" for row in slower)
            print(
                f"bench compare: {len(slower)} case(s) slower than A by more than {args.fail_above:g}%: {names}",
                file=sys.stderr,
            )
            return EXIT_FAILED
    return EXIT_OK
