"""Nox sessions: the test suite, lint, and benchmark environments with CPU or CUDA builds of PyTorch.

    nox -s tests                  # the test suite: no timing assertion, no data beyond the repository
    nox -s targets                # speed and accuracy targets (a quiet machine, the full Fashion-MNIST)
    nox -s bench_cpu -- --quick   # CPU build of torch: check, then benchmark the CPU
    nox -s bench_cuda             # CUDA build: check --require cuda, then benchmark GPUs and CPU
    nox -s gpu_box                # the GPU machine's packages (torch 2.11, no pydantic), on the CPU

Arguments after `--` go to `bench run`. Wheel indexes, the torch version and the CUDA flavour come
from `.env` (shared with the Docker images) and can be overridden from the environment.

One torch environment per build, shared by the sessions that want it: `tests`, `bench_cpu` and
`bench_torch(torch=<the .env pin>)` all run in `.nox/torch-cpu`, `bench_cuda` in
`.nox/torch-<flavour>`, other releases in `.nox/torch-cpu-<version>`. Each is built once (torch,
torchvision, then the project with its test extras), and rebuilt only when the torch settings
change; a changed pyproject.toml reinstalls the project alone. A stamp in each records what it was
built from and which torch build it really got. Before pip is given PyTorch's index, one look
(2 s at most; instant for a name that does not resolve) says whether it answers; if not, the
session says so and installs PyPI's torch at once instead of letting pip retry the index for
minutes. Delete `.nox/torch-*` to force a fresh build.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

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
# The extras every torch environment gets, so that the test suite and the benchmarks share one.
PROJECT_EXTRAS = "test"
STAMP = ".bench-environment.json"


def _load_torch_wheels() -> ModuleType:
    """scripts/torch_wheels.py: the index probe and the build checks, shared with docker/Dockerfile."""
    spec = importlib.util.spec_from_file_location("bench_torch_wheels", ROOT / "scripts" / "torch_wheels.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


torch_wheels = _load_torch_wheels()
probe_index = torch_wheels.probe_index
flavour_cuda = torch_wheels.flavour_cuda
flavour_mismatch = torch_wheels.flavour_mismatch
package_version = torch_wheels.package_version


def _quiet_uv_lookup(record: logging.LogRecord) -> bool:
    """nox looks for uv whatever the backend, and logs "uv binary not found." on every run where
    there is none. These sessions install with pip (uv would not see the local wheel copies some
    machines have); uv stays usable (`nox -db uv`) but is not needed, so the line is noise."""
    return record.getMessage() != "uv binary not found."


_nox_logger = logging.getLogger("nox")
if not any(getattr(f, "__name__", "") == "_quiet_uv_lookup" for f in _nox_logger.filters):
    _nox_logger.addFilter(_quiet_uv_lookup)


# --- settings ----------------------------------------------------------------------------------


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


def torch_request(flavour: str, version: str | None = None) -> dict[str, str]:
    """What a torch environment of `flavour` (`cpu` or a `cuXXX`) is built from.

    The `.env` pins give both releases; another torch `version` (bench_torch) leaves torchvision to
    pip, which picks the release that declares that torch. `index` is `<base>/<flavour>`, or ""
    when BENCH_TORCH_INDEX_BASE is empty (PyPI only).
    """
    settings = torch_settings()
    pinned = settings.get("BENCH_TORCH_VERSION", "")
    if version is None or version == pinned:
        version, vision = pinned, settings.get("BENCH_TORCHVISION_VERSION", "")
    else:
        vision = ""
    return {
        "flavour": flavour,
        "torch": f"torch=={version}" if version else "torch",
        "torchvision": f"torchvision=={vision}" if vision else "torchvision",
        "index": torch_wheels.index_url(settings.get("BENCH_TORCH_INDEX_BASE", ""), flavour),
        "extras": PROJECT_EXTRAS,
    }


def torch_install_args(flavour: str, version: str | None = None, *, index: str | None = None) -> list[str]:
    """pip arguments installing torch and torchvision of `flavour`.

    `index`: the index to add with --extra-index-url; by default the settings' one (`<base>/<flavour>`),
    "" for none (the one a session uses is the settings' one if it answered, see usable_index).
    """
    request = torch_request(flavour, version)
    index = request["index"] if index is None else index
    return [request["torch"], request["torchvision"], *(["--extra-index-url", index] if index else [])]


def usable_index(
    flavour: str,
    log: Callable[[str], Any] = print,
    warn: Callable[[str], Any] = print,
    timeout: float = torch_wheels.PROBE_TIMEOUT_S,
    otherwise: str | None = None,
) -> str:
    """The index to give pip for `flavour`: the settings' one if it answers now, else "" (PyPI only).

    One look, `timeout` seconds at most, said in one line either way: pip itself would retry an
    unreachable index 5 times for every package, minutes of silence before it fell back to PyPI.
    `otherwise`: what happens if it does not answer (default: PyPI's torch is installed).
    """
    url = torch_request(flavour)["index"]
    if not url:
        log(f"BENCH_TORCH_INDEX_BASE is empty: installing {torch_wheels.pypi_torch(flavour)}")
        return ""
    start = time.monotonic()
    ok, reason = probe_index(url, timeout)
    line = torch_wheels.probe_message(url, flavour, ok, reason, otherwise)
    line += f" [probed in {time.monotonic() - start:.2f} s]"
    (log if ok else warn)(line)
    return url if ok else ""


# --- one shared environment per torch build ------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One nox at a time builds a given environment (two terminals running tests and bench_cpu)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _shown(path: Path) -> str:
    """A path as the log shows it: relative to the project where it lies inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class TorchEnv:
    """A virtual environment outside nox's per-session ones, shared by the sessions of one torch build."""

    def __init__(self, location: Path, flavour: str) -> None:
        self.location = location
        self.flavour = flavour
        self.bin = location / ("Scripts" if os.name == "nt" else "bin")
        self.stamp = location / STAMP

    def read_stamp(self) -> dict[str, Any] | None:
        if not (self.bin / "python").exists() and not (self.bin / "python.exe").exists():
            return None
        try:
            stamp = json.loads(self.stamp.read_text())
        except (OSError, ValueError):
            return None
        return stamp if isinstance(stamp, dict) else None

    def env(self) -> dict[str, str]:
        """What the commands run in it see: its bin first on PATH, and the flavour asked for."""
        return {
            "VIRTUAL_ENV": str(self.location),
            "PATH": os.pathsep.join([str(self.bin), os.environ.get("PATH", "")]),
            # `bench check` compares it with the torch it finds (the Docker image sets BENCH_IMAGE_FLAVOUR)
            "BENCH_REQUESTED_TORCH_FLAVOUR": self.flavour,
        }

    def run(self, session: nox.Session, program: str, *args: str, **kwargs: Any) -> Any:
        return session.run(_shown(self.bin / program), *args, env=self.env(), external=True, **kwargs)

    def create(self, session: nox.Session) -> None:
        if self.location.exists():
            shutil.rmtree(self.location)
        self.location.parent.mkdir(parents=True, exist_ok=True)
        for name, text in (
            (".gitignore", "*\n"),
            ("CACHEDIR.TAG", "Signature: 8a477f597d28d172789f06886806bc55\n"),
        ):
            if not (self.location.parent / name).exists():  # what nox puts beside its own environments
                (self.location.parent / name).write_text(text)
        backend = "virtualenv" if importlib.util.find_spec("virtualenv") else "venv"  # nox needs virtualenv
        session.run(sys.executable, "-m", backend, _shown(self.location), silent=True, external=True)

    def pip_install(self, session: nox.Session, *args: str) -> None:
        # silent like nox's session.install: pip's output is shown if it fails
        self.run(session, "python", "-m", "pip", "install", *args, silent=True)

    def inspect(self, session: nox.Session) -> dict[str, Any]:
        """The torch build really installed, asked of the environment's own interpreter."""
        output = str(
            self.run(
                session,
                "python",
                str(ROOT / "scripts" / "torch_wheels.py"),
                "installed",
                "--json",
                silent=True,
            )
        )
        # the last line: torch may have printed warnings before it
        build: dict[str, Any] = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
        return build


def _envdir(session: nox.Session) -> Path:
    """nox's folder of environments (`.nox`, or --envdir), the parent of each session's own."""
    return Path(session.env_dir).parent


def _mention_old_environments(session: nox.Session, envdir: Path) -> None:
    """The per-session torch environments of earlier versions of this file are no longer used."""
    old = [
        path
        for path in sorted(envdir.glob("*"))
        if (path.name in ("tests", "bench_cpu", "bench_cuda") or path.name.startswith("bench_torch"))
        and (path / ".bench-installed").is_file()
    ]
    if old:
        names = " ".join(_shown(path) for path in old)
        session.log(
            f"no longer used (the torch sessions share .nox/torch-*): {names}, up to 5.5 GB each; rm -rf {names}"
        )


def torch_environment(session: nox.Session, flavour: str, version: str | None = None) -> TorchEnv:
    """The shared environment of this torch build, built or brought up to date, its build printed and checked."""
    request = torch_request(flavour, version)
    pinned = torch_settings().get("BENCH_TORCH_VERSION", "")
    name = f"torch-{flavour}" if version in (None, pinned) else f"torch-{flavour}-{version}"
    envdir = _envdir(session)
    env = TorchEnv(envdir / name, flavour)
    pyproject = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    _mention_old_environments(session, envdir)
    with _locked(envdir / f"{name}.lock"):
        stamp = env.read_stamp()
        index_used = None if stamp is None else str(stamp.get("index_used") or "")
        installed = (stamp or {}).get("installed") or {}
        old = (stamp or {}).get("request") or {}
        changed = [key for key in request if key != "index" and old.get(key) != request[key]]
        built = kept = False
        # The index is judged by the one really used: an environment that fell back to PyPI is what
        # BENCH_TORCH_INDEX_BASE= asks for, and is kept for the index while the index does not answer.
        if stamp is None or changed or (index_used and index_used != request["index"]):
            if stamp is None:
                why = "new" if not env.location.exists() else "no stamp of a finished build"
            else:
                changed = changed or ["index"]
                why = ", ".join(f"{key} {old.get(key)!r} -> {request[key]!r}" for key in changed)
            session.log(f"building {_shown(env.location)} ({why})")
            index = usable_index(flavour, session.log, session.warn)
            index_used, built = _build(session, env, request, index), True
        elif (
            request["index"]
            and not index_used
            and flavour_mismatch(flavour, installed.get("cuda"), installed.get("torch"))
        ):
            # built from PyPI (the index unreachable, or not asked for) and PyPI's is another build
            # than the one asked for: try the index again
            keep = f"keeping {_shown(env.location)} and its torch {installed.get('torch')} until it answers"
            index = usable_index(flavour, session.log, session.warn, otherwise=keep)
            if index:
                session.log(
                    f"{_shown(env.location)} has PyPI's torch {installed.get('torch')}: rebuilding from {index}"
                )
                index_used, built = _build(session, env, request, index), True
            else:
                kept = True
        if not built and stamp is not None and stamp.get("pyproject") != pyproject:
            session.log("pyproject.toml changed: reinstalling the project")
            env.pip_install(session, "-e", f".[{PROJECT_EXTRAS}]")
        elif not built and not kept:
            session.log(f"{_shown(env.location)} up to date: nothing to install")
        build = env.inspect(session)
        new_stamp = {"request": request, "index_used": index_used, "pyproject": pyproject, "installed": build}
        if new_stamp != stamp:  # what is really there, even after a pip install by hand
            env.stamp.write_text(json.dumps(new_stamp, indent=2) + "\n")
    _report_build(session, flavour, build)
    return env


def _build(session: nox.Session, env: TorchEnv, request: dict[str, str], index: str) -> str:
    """A fresh environment: torch and torchvision (from `index` if any), then the project. Returns `index`."""
    start = time.monotonic()
    env.create(session)
    args = [request["torch"], request["torchvision"], *(["--extra-index-url", index] if index else [])]
    session.log(f"installing {' '.join(args[:2])} (the first time: about a minute and 5.5 GB)")
    env.pip_install(session, *args)
    env.pip_install(session, "-e", f".[{PROJECT_EXTRAS}]")
    session.log(f"built {_shown(env.location)} in {time.monotonic() - start:.0f} s")
    return index


def _report_build(session: nox.Session, flavour: str, build: dict[str, Any]) -> None:
    """Prints the torch build the environment really has; warns when it is not the flavour asked for."""
    session.log(f"installed: {torch_wheels.describe_build(build)}")
    if build.get("torch_import_error"):
        session.warn(f"torch does not import: {build['torch_import_error']} (bench check says more)")
    problem = flavour_mismatch(flavour, build.get("cuda"), build.get("torch"))
    if problem:
        session.warn(problem)


def install_once(session: nox.Session, *commands: list[str]) -> None:
    """For the light sessions in nox's own environments: runs the pip installs unless this environment
    was already built from exactly these inputs."""
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


# --- sessions ----------------------------------------------------------------------------------
# venv_backend="none": the torch sessions run in the shared environments above, not in nox's own.


# The README's test command: no timing assertion and no data beyond what the repository ships, so it
# passes on a fresh machine, busy or not. Timing and full-data targets are the `targets` session's.
TEST_SELECTION = "not container and not targets"


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Run the test suite (unit and end-to-end; no timing targets) in the shared CPU environment."""
    env = torch_environment(session, "cpu")
    env.run(session, "pytest", *(session.posargs or ["tests", "-m", TEST_SELECTION]))


@nox.session(default=False, venv_backend="none")
def targets(session: nox.Session) -> None:
    """Check the speed and accuracy targets by benchmark runs (needs a quiet machine and the full Fashion-MNIST)."""
    env = torch_environment(session, "cpu")
    env.run(session, "pytest", *(session.posargs or ["tests", "-m", "targets", "-rA"]))


@nox.session(default=False)
def lint(session: nox.Session) -> None:
    """Check style, layers and types: ruff (lint, format), import-linter and mypy (against the CPU torch)."""
    install_once(session, ["ruff>=0.5", "mypy>=1.10", "import-linter>=2.1", "types-tabulate", "types-psutil"])
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")  # the layers contract in pyproject.toml: each folder imports only from below
    # torch ships its own types; without it mypy would see every torch name as Any and check nothing
    # against it (and flag the ignores that torch's types need as unused)
    torch_env = torch_environment(session, "cpu")
    session.run("mypy", "--python-executable", str(torch_env.bin / "python"), "bench")


def _bench(session: nox.Session, flavour: str, devices: str, require_cuda: bool) -> None:
    env = torch_environment(session, flavour)
    env.run(session, "bench", "check", *(["--require", "cuda"] if require_cuda else []))
    env.run(session, "bench", "run", "--devices", devices, *session.posargs)


@nox.session(default=False, venv_backend="none")
def bench_cpu(session: nox.Session) -> None:
    """CPU-wheel environment (shared with tests): check the install, benchmark the CPU (args after -- go to bench run)."""
    _bench(session, "cpu", devices="cpu", require_cuda=False)


@nox.session(default=False, venv_backend="none")
def bench_cuda(session: nox.Session) -> None:
    """Build a CUDA-wheel environment, require a usable GPU, benchmark every GPU and the CPU beside them."""
    _bench(
        session, torch_settings().get("BENCH_CUDA_FLAVOUR", "cu128"), devices="cpu,cuda", require_cuda=True
    )


TORCH_VERSIONS = [
    v.strip() for v in os.environ.get("BENCH_TORCH_VERSIONS", "2.13.0,2.14.1").split(",") if v.strip()
]


@nox.session(default=False, venv_backend="none")
@nox.parametrize("torch", TORCH_VERSIONS)
def bench_torch(session: nox.Session, torch: str) -> None:
    """Benchmark the CPU with one torch release per environment (BENCH_TORCH_VERSIONS), for `bench compare`."""
    env = torch_environment(session, "cpu", version=torch)
    env.run(session, "bench", "check")
    out = ROOT / "results" / f"torch-{torch}-{time.strftime('%Y%m%d-%H%M%S')}"
    env.run(session, "bench", "run", "--devices", "cpu", "--out", str(out), *session.posargs)
    session.log(
        f"results in {out.relative_to(ROOT)}; compare two releases with: bench compare <folder A> <folder B>"
    )


# --- the GPU machine, simulated on the CPU ----------------------------------------------------------
# The GPU machine that is lent for `scripts/cuda-reference.sh` (shared/ENVIRONMENT.md) cannot install
# anything: its python3 has exactly these packages, and the project arrives as a plain copy run from
# PYTHONPATH. `gpu_box` builds the same set here (PyPI's torch 2.11.0 is a CUDA build, which runs on
# the CPU) and runs what that machine would run, so that a torch API newer than 2.11, a module that
# needs pydantic or a test that fails to collect there is found on the CPU, before the GPU is lent.
GPU_BOX_PACKAGES = (
    "torch==2.11.0",
    "torchvision==0.26.0",
    "pytest",
    "pytest-benchmark",
    "pytest-timeout",
    "pytest-xdist",
    "hypothesis",
    "psutil",
    "tabulate",
    "nvidia-ml-py",
    "matplotlib",
    "numpy",
    "pyyaml",
    "rich",
    "tqdm",
)
GPU_BOX_ABSENT = ("pydantic", "nox")
GPU_BOX_TORCH = ("2.11.0", "0.26.0")


class GpuBoxEnv(TorchEnv):
    """The GPU machine's packages in `.nox/gpu-box`; the project reaches it through PYTHONPATH alone."""

    def env(self) -> dict[str, str]:
        return {
            "VIRTUAL_ENV": str(self.location),
            "PATH": os.pathsep.join([str(self.bin), os.environ.get("PATH", "")]),
            "PYTHONPATH": str(ROOT),
            "BENCH_REQUESTED_TORCH_FLAVOUR": "",  # no flavour asked for: the box has whatever it has
        }


GPU_BOX_CHECK = f"""
import importlib.metadata, importlib.util, json, sys
import torch, torchvision
try:  # installed into the environment itself; an editable install's egg-info in the checkout is not that
    dist = importlib.metadata.distribution("torch-bench")
    installed = str(dist.locate_file("")).startswith(sys.prefix)
except importlib.metadata.PackageNotFoundError:
    installed = False
print(json.dumps({{"torch": torch.__version__, "torchvision": torchvision.__version__, "cuda": torch.version.cuda,
                  "present": [name for name in {GPU_BOX_ABSENT!r} if importlib.util.find_spec(name)],
                  "project_installed": installed}}))
"""


def gpu_box_environment(session: nox.Session) -> GpuBoxEnv:
    """`.nox/gpu-box`, built once from GPU_BOX_PACKAGES (pip, as on this project's machines) and reused
    while its stamp says it was built from the same list; then checked to be what that machine has."""
    env = GpuBoxEnv(_envdir(session) / "gpu-box", "")
    request = {"packages": list(GPU_BOX_PACKAGES), "python": f"{sys.version_info[0]}.{sys.version_info[1]}"}
    with _locked(_envdir(session) / "gpu-box.lock"):
        stamp = env.read_stamp()
        if stamp is None or stamp.get("request") != request:
            why = "new" if stamp is None else "the package list changed"
            session.log(f"building {_shown(env.location)} ({why}; the first time: a few minutes and 5 GB)")
            start = time.monotonic()
            env.create(session)
            env.pip_install(session, *GPU_BOX_PACKAGES)
            session.log(f"built {_shown(env.location)} in {time.monotonic() - start:.0f} s")
        else:
            session.log(f"{_shown(env.location)} up to date: nothing to install")
        output = str(env.run(session, "python", "-c", GPU_BOX_CHECK, silent=True))
        facts: dict[str, Any] = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
        new_stamp = {"request": request, "installed": facts}
        if new_stamp != stamp:
            env.stamp.write_text(json.dumps(new_stamp, indent=2) + "\n")
    session.log(
        f"installed: torch {facts['torch']} (CUDA {facts['cuda']}), torchvision {facts['torchvision']}"
    )
    problems = []
    if (facts["torch"].split("+")[0], facts["torchvision"].split("+")[0]) != GPU_BOX_TORCH:
        problems.append(
            f"torch {facts['torch']} and torchvision {facts['torchvision']}, not torch {GPU_BOX_TORCH[0]} "
            f"and torchvision {GPU_BOX_TORCH[1]}"
        )
    if facts["present"]:
        problems.append(f"{', '.join(facts['present'])} installed, which the GPU machine lacks")
    if facts["project_installed"]:
        problems.append("the project is installed; on the GPU machine it runs from PYTHONPATH alone")
    if problems:
        session.error(f"{_shown(env.location)} is not the GPU machine's environment: {'; '.join(problems)}")
    return env


@nox.session(default=False, venv_backend="none")
def gpu_box(session: nox.Session) -> None:
    """The GPU machine's packages on the CPU (torch 2.11, no pydantic, the project on PYTHONPATH): check,
    a quick run and its report, the CUDA tests collected, and scripts/cuda-reference.sh's dry run."""
    env = gpu_box_environment(session)
    python = _shown(env.bin / "python")
    with tempfile.TemporaryDirectory(prefix="gpu-box-") as tmp:
        run = str(Path(tmp) / "run")
        env.run(session, "python", "-m", "bench", "check")
        env.run(session, "python", "-m", "bench", "run", "--quick", "--dataset", "synthetic", "--out", run)
        env.run(session, "python", "-m", "bench", "report", run)
        # a module that fails to import there stops `pytest -m cuda` with a collection error
        env.run(
            session, "python", "-m", "pytest", "-p", "no:cacheprovider", "-m", "cuda", "--collect-only", "-q"
        )
        session.run(
            "bash",
            str(ROOT / "scripts" / "cuda-reference.sh"),
            "--dry-run",
            env={**env.env(), "PYTHON": python, "OUT": str(Path(tmp) / "reference")},
            external=True,
        )


@nox.session(default=False)
def container(session: nox.Session) -> None:
    """Build the CPU image, run it with Compose, check the tables on the host; cleans up (needs Docker)."""
    install_once(session, ["pytest>=8", "pyyaml>=6"])  # pyyaml: the PyTorchJob manifest's checks
    # --noconftest: the suite's conftest imports torch, which this light environment does not need
    session.run(
        "pytest", "tests/test_container.py", "--noconftest", "-m", "container", "-rs", *session.posargs
    )
