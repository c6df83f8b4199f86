"""Nox sessions: the test suite, lint, and benchmark environments with CPU or CUDA builds of PyTorch.

    nox -s tests                  # the test suite (what CI runs)
    nox -s bench_cpu -- --quick   # CPU build of torch: check, then benchmark the CPU
    nox -s bench_cuda             # CUDA build: check --require cuda, then benchmark GPUs and CPU

Arguments after `--` go to `bench run`. Wheel indexes, the torch version and the CUDA flavour come
from `.env` (shared with the Docker images) and can be overridden from the environment. Virtual
environments are reused, and their packages reinstalled only when what they were built from
(pyproject.toml, the torch settings) changed, so a second run starts in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests"]

TORCH_SETTINGS = (
    "BENCH_TORCH_INDEX_BASE",
    "BENCH_CUDA_FLAVOUR",
    "BENCH_TORCH_VERSION",
    "BENCH_TORCHVISION_VERSION",
)


def torch_settings() -> dict[str, str]:
    """`.env` values, each overridden by the environment variable of the same name."""
    settings: dict[str, str] = {}
    for line in (ROOT / ".env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    for key in TORCH_SETTINGS:
        if key in os.environ:
            settings[key] = os.environ[key]
    return settings


def torch_install_args(flavour: str, version: str | None = None) -> list[str]:
    """pip arguments installing torch and torchvision of `flavour` (`cpu` or a `cuXXX`).

    With the `.env` pins both releases are pinned; with another torch `version` (bench_torch),
    torchvision is left to pip, which picks the release that declares that torch.
    """
    settings = torch_settings()
    if version is None:
        version = settings.get("BENCH_TORCH_VERSION", "")
        vision = settings.get("BENCH_TORCHVISION_VERSION", "")
    else:
        vision = ""
    args = [
        f"torch=={version}" if version else "torch",
        f"torchvision=={vision}" if vision else "torchvision",
    ]
    base = settings.get("BENCH_TORCH_INDEX_BASE", "").rstrip("/")
    if base:
        args += ["--extra-index-url", f"{base}/{flavour}"]
    return args


def install_once(session: nox.Session, *commands: list[str]) -> None:
    """Runs the pip installs unless this environment was already built from exactly these inputs."""
    fingerprint = hashlib.sha256(
        json.dumps([list(commands), (ROOT / "pyproject.toml").read_text()]).encode()
    ).hexdigest()
    stamp = Path(session.virtualenv.location) / ".bench-installed"
    if stamp.exists() and stamp.read_text() == fingerprint:
        session.log("environment up to date: nothing to install")
        return
    for command in commands:
        session.install(*command)
    stamp.write_text(fingerprint)


def report_torch(session: nox.Session, expect_cuda: bool) -> None:
    """Prints the torch build this environment really has, and warns when it is not the one asked for."""
    output = session.run(
        "python",
        "-c",
        # torchvision by its metadata: a mismatched one fails on import, and `bench check` explains that
        "import importlib.metadata as m, torch; "
        "print(torch.__version__, torch.version.cuda or 'cpu', m.version('torchvision'))",
        silent=True,
    )
    torch_version, cuda, vision_version = str(output).split()[-3:]
    built = "CPU build" if cuda == "cpu" else f"CUDA {cuda} build"
    session.log(f"installed: torch {torch_version} ({built}), torchvision {vision_version}")
    if expect_cuda and cuda == "cpu":
        session.warn(
            "this environment got a CPU-only torch: check BENCH_TORCH_INDEX_BASE / BENCH_CUDA_FLAVOUR"
        )
    if not expect_cuda and cuda != "cpu":
        session.warn(
            "the CPU index was not used (unreachable, or BENCH_TORCH_INDEX_BASE is empty): this is PyPI's CUDA "
            "build of torch. It runs on the CPU, but it is not the CPU wheel; the results record which it was."
        )


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (unit, end-to-end and target benchmarks) in a fresh environment."""
    install_once(session, torch_install_args("cpu"), ["-e", ".[test]"])
    report_torch(session, expect_cuda=False)
    session.run("pytest", *(session.posargs or ["tests", "-m", "not container"]))


@nox.session(default=False)
def lint(session: nox.Session) -> None:
    """Check style and types: ruff (lint and format) and mypy."""
    install_once(session, ["ruff>=0.5", "mypy>=1.10", "types-tabulate", "types-psutil"])
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "bench")


def _bench(session: nox.Session, flavour: str, devices: str, require_cuda: bool) -> None:
    install_once(session, torch_install_args(flavour), ["-e", "."])
    report_torch(session, expect_cuda=require_cuda)
    session.run("bench", "check", *(["--require", "cuda"] if require_cuda else []))
    session.run("bench", "run", "--devices", devices, *session.posargs)


@nox.session(default=False)
def bench_cpu(session: nox.Session) -> None:
    """Build a CPU-wheel environment, check the install, benchmark the CPU (args after -- go to bench run)."""
    _bench(session, "cpu", devices="cpu", require_cuda=False)


@nox.session(default=False)
def bench_cuda(session: nox.Session) -> None:
    """Build a CUDA-wheel environment, require a usable GPU, benchmark every GPU and the CPU beside them."""
    _bench(
        session, torch_settings().get("BENCH_CUDA_FLAVOUR", "cu128"), devices="cpu,cuda", require_cuda=True
    )


TORCH_VERSIONS = [
    v.strip() for v in os.environ.get("BENCH_TORCH_VERSIONS", "2.13.0,2.14.1").split(",") if v.strip()
]


@nox.session(default=False)
@nox.parametrize("torch", TORCH_VERSIONS)
def bench_torch(session: nox.Session, torch: str) -> None:
    """Benchmark the CPU with one torch release per environment (BENCH_TORCH_VERSIONS), for `bench compare`."""
    install_once(session, torch_install_args("cpu", version=torch), ["-e", "."])
    report_torch(session, expect_cuda=False)
    session.run("bench", "check")
    out = ROOT / "results" / f"torch-{torch}-{time.strftime('%Y%m%d-%H%M%S')}"
    session.run("bench", "run", "--devices", "cpu", "--out", str(out), *session.posargs)
    session.log(
        f"results in {out.relative_to(ROOT)}; compare two releases with: bench compare <folder A> <folder B>"
    )


@nox.session(default=False)
def container(session: nox.Session) -> None:
    """Build the CPU image, run it with Compose, check the tables on the host; cleans up (needs Docker)."""
    install_once(session, ["pytest>=8"])
    # --noconftest: the suite's conftest imports torch, which this light environment does not need
    session.run(
        "pytest", "tests/test_container.py", "--noconftest", "-m", "container", "-rs", *session.posargs
    )
