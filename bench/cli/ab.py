"""`bench ab [side options] -- <bench run options>`: interleaved A/B between two interpreters, option sets
or environments; the job is bench.app's (`ab_job`), the blocks bench.engine.ab's, the statistics
bench.analysis.ab's. Torch-free at import."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.analysis.ab import ORDERS, RESOLUTION
from bench.cli.args import finite_float
from bench.core.envvars import VARIABLES
from bench.core.errors import UsageError

HELP = "A/B between two interpreters, option sets or environments, in interleaved blocks (ABBA)"
EPILOG = (
    "Shared `bench run` options go after `--`, e.g. bench ab --b-args '--modes fused' -- --workloads "
    "train_step --batch-sizes 64. Each block is a fresh `bench run --passes 1` of one side."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    for side in ("a", "b"):
        name = side.upper()
        parser.add_argument(
            f"--{side}-python",
            metavar="PYTHON",
            help=f"side {name}'s interpreter, e.g. .nox/torch-2-11/bin/python (default: this one, {sys.executable})",
        )
        parser.add_argument(
            f"--{side}-args",
            default="",
            metavar="OPTIONS",
            help=f"extra `bench run` options of side {name}, one string split like a shell does, e.g. "
            f"'--modes fused' or --{side}-args=--quick (one option alone needs the =) (default: none)",
        )
        parser.add_argument(
            f"--{side}-env",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"an environment variable for side {name}'s blocks; repeatable (default: none)",
        )
    parser.add_argument(
        "--aa",
        action="store_true",
        help="A against A itself: B is a copy of side A (its noise floor and false-alarm rate) (default: off)",
    )
    parser.add_argument(
        "--budget",
        type=finite_float,
        default=120.0,
        metavar="SECONDS",
        help="seconds of measuring (the counted blocks' runs after their start-up; warm-ups not counted) after "
        "which no pair is started (default: %(default)g)",
    )
    parser.add_argument(
        "--resolution",
        type=finite_float,
        default=RESOLUTION * 100,
        metavar="PCT",
        help="the smallest change that matters, in percent: a case whose interval lies within ±PCT is "
        "`same`, and the blocks stop when every case is decided (default: %(default)g)",
    )
    parser.add_argument(
        "--order", choices=ORDERS, default="abba", help="the order of the pairs' blocks (default: abba)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --order random (default: %(default)s)")
    parser.add_argument(
        "--warmup", type=int, default=1, metavar="N", help="warm-up blocks per side, not counted (default: 1)"
    )
    parser.add_argument(
        "--max-pairs", type=int, metavar="N", help="stop after N counted pairs (default: only the budget)"
    )
    parser.add_argument(
        "--use-contended",
        action="store_true",
        help="count blocks whose cases were contended (their threads waited for CPUs other work held) "
        "(default: off, they are left out)",
    )
    parser.add_argument("--out", type=Path, help="results folder (default: results/ab-<date>-<id>/)")
    parser.add_argument(
        "shared", nargs="*", metavar="-- RUN OPTIONS", help="after --: the `bench run` options of both sides"
    )


def parse_env(items: Sequence[str], option: str) -> dict[str, str]:
    """`KEY=VALUE` pairs; a variable the harness checks is checked here, before anything runs."""
    from bench.core.envvars import check_environment

    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise UsageError(f"{option} {item!r} is not KEY=VALUE", hint=f"e.g. {option} OMP_NUM_THREADS=1")
        env[key] = value
    known = {key: value for key, value in env.items() if key in VARIABLES}
    if known:
        try:
            check_environment(known)
        except UsageError as error:
            raise UsageError(f"{option}: {error.message}", hint=error.hint) from None
    return env


def split_args(text: str, option: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(text))
    except ValueError as error:
        raise UsageError(f"{option} {text!r} does not split: {error}") from None


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from bench import app
    from bench.engine.ab import ABRequest, Side

    shared = [arg for arg in args.shared if arg != "--"]  # argparse keeps a `--` in some versions
    if not args.budget > 0:
        raise UsageError(f"--budget {args.budget:g} must be a positive number of seconds")
    if not 0 < args.resolution < 100:
        raise UsageError(f"--resolution {args.resolution:g} must be a percentage above 0 and below 100")
    if args.warmup < 0 or (args.max_pairs is not None and args.max_pairs < 1):
        raise UsageError("--warmup must be 0 or more and --max-pairs 1 or more")
    a = Side(
        "A",
        args.a_python or sys.executable,
        split_args(args.a_args, "--a-args"),
        parse_env(args.a_env, "--a-env"),
    )
    if args.aa:
        if args.b_python or args.b_args or args.b_env:
            raise UsageError("--aa compares A with itself: it takes no --b-python, --b-args or --b-env")
        b = Side("B", a.python, a.args, dict(a.env))
    else:
        b = Side(
            "B",
            args.b_python or sys.executable,
            split_args(args.b_args, "--b-args"),
            parse_env(args.b_env, "--b-env"),
        )
        if (a.python, a.args, a.env) == (b.python, b.args, b.env):
            raise UsageError(
                "sides A and B are the same", hint="give B its --b-python, --b-args or --b-env, or say --aa"
            )
    request = ABRequest(
        sides=(a, b),
        shared=tuple(shared),
        folder=args.out or app.default_ab_folder(),
        budget_s=args.budget,
        resolution=args.resolution / 100,
        order=args.order,
        seed=args.seed,
        warmup=args.warmup,
        max_pairs=args.max_pairs,
        use_contended=args.use_contended,
    )
    return app.ab_job(request, argv, aa=args.aa)
