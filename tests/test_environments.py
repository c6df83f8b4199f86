"""The wheel settings live in one place (.env) and reach both the Nox sessions and the Docker build;
an unreachable index is found out in about a second; the torch sessions share one environment per
build, whose stamp records the build it really got (scripts/torch_wheels.py, noxfile.py).

No network beyond loopback: indexes are a local http.server, a closed local port, a `.invalid` name.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def noxfile(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    registry = pytest.importorskip("nox.registry")
    # each test loads the noxfile afresh; nox warns (later: refuses) on a session registered twice
    reset = getattr(registry, "reset", lambda: None)  # not in every nox release
    reset()
    for key in (
        "BENCH_TORCH_INDEX_BASE",
        "BENCH_CUDA_FLAVOUR",
        "BENCH_TORCH_VERSION",
        "BENCH_TORCHVISION_VERSION",
    ):
        monkeypatch.delenv(key, raising=False)
    spec = importlib.util.spec_from_file_location("project_noxfile", ROOT / "noxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    reset()


def env_file_values() -> dict[str, str]:
    """The `KEY=value` lines of .env, read here without the noxfile's parser."""
    return dict(re.findall(r"^(BENCH_\w+)=(.*)$", (ROOT / ".env").read_text(), flags=re.MULTILINE))


def test_env_file_defaults_reach_the_pip_arguments(noxfile: ModuleType) -> None:
    env_file = env_file_values()
    pin, vision = env_file["BENCH_TORCH_VERSION"], env_file["BENCH_TORCHVISION_VERSION"]
    assert pin and vision, "the .env pins torch and torchvision as a pair"
    assert noxfile.torch_settings() == env_file
    assert env_file["BENCH_TORCH_INDEX_BASE"] == "https://download.pytorch.org/whl"
    assert noxfile.torch_install_args("cpu") == [
        f"torch=={pin}",
        f"torchvision=={vision}",
        "--extra-index-url",
        "https://download.pytorch.org/whl/cpu",
    ]
    flavour = env_file["BENCH_CUDA_FLAVOUR"]
    assert re.fullmatch(r"cu\d{3,}", flavour), flavour
    assert noxfile.torch_install_args(flavour) == [
        f"torch=={pin}",
        f"torchvision=={vision}",
        "--extra-index-url",
        f"https://download.pytorch.org/whl/{flavour}",
    ]


def test_environment_overrides_the_env_file(noxfile: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_TORCH_INDEX_BASE", "")
    monkeypatch.setenv("BENCH_TORCH_VERSION", "2.14.1")
    monkeypatch.setenv("BENCH_TORCHVISION_VERSION", "")
    assert noxfile.torch_install_args("cpu") == ["torch==2.14.1", "torchvision"]  # PyPI only, torch pinned
    monkeypatch.setenv("BENCH_TORCH_INDEX_BASE", "https://mirror.example/whl/")
    assert noxfile.torch_install_args("cu126")[-1] == "https://mirror.example/whl/cu126"
    assert noxfile.torch_install_args("cpu", version="2.13.0")[0] == "torch==2.13.0"


def test_compose_builds_from_the_same_settings() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    env_keys = set(re.findall(r"^(BENCH_\w+)=", (ROOT / ".env").read_text(), flags=re.MULTILINE))
    assert env_keys == {
        "BENCH_TORCH_INDEX_BASE",
        "BENCH_CUDA_FLAVOUR",
        "BENCH_TORCH_VERSION",
        "BENCH_TORCHVISION_VERSION",
    }
    for key in env_keys:
        assert "${" + key in compose, f"compose.yaml does not pass {key} to the build"
    for argument in ("TORCH_INDEX_BASE", "TORCH_FLAVOUR", "TORCH_VERSION", "TORCHVISION_VERSION"):
        assert f"ARG {argument}" in dockerfile and f"{argument}:" in compose
    for config in ("compose.yaml", "docker/Dockerfile", "noxfile.py", "scripts/torch_wheels.py"):  # .env only
        assert "download.pytorch.org" not in (ROOT / config).read_text(), config


# --- the index probe ---------------------------------------------------------------------------

PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in PROXY_VARIABLES:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def index_server(tmp_path: Path, no_proxy: None) -> Iterator[str]:
    """A wheel index on loopback with a page for torch under /whl/cpu (and none under /whl/cu999)."""
    (tmp_path / "whl" / "cpu" / "torch").mkdir(parents=True)
    (tmp_path / "whl" / "cpu" / "torch" / "index.html").write_text(
        '<a href="torch-2.14.1+cpu-cp311-cp311-linux_x86_64.whl">torch-2.14.1+cpu</a>'
    )
    (tmp_path / "whl" / "cu999").mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/whl"
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a black-holed server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def timed(function: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = function(*args, **kwargs)
    return result, time.monotonic() - start


def own_lookup(name: str, within: float) -> float | None:
    """Seconds this machine's resolver takes to answer for `name` (found or not), None if not within."""
    answered: list[float] = []

    def lookup() -> None:
        start = time.monotonic()
        try:
            socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
        except OSError:
            pass
        answered.append(time.monotonic() - start)

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(within)
    return answered[0] if answered else None


def test_probe_says_unreachable_at_once_for_a_name_that_does_not_resolve(
    noxfile: ModuleType, no_proxy: None
) -> None:
    (ok, reason), seconds = timed(noxfile.probe_index, "https://download.example.invalid/whl/cpu", 1.0)
    assert not ok
    lookup = own_lookup("download.example.invalid", 1.0)
    if lookup is None:  # a resolver that never answers (some sandboxes): the probe's time limit ends it
        assert "no answer within 1 s" in reason, reason
        assert seconds < 1.5
    else:  # the resolver says "no such name" at once: so must the probe, without waiting for its limit
        assert "the name download.example.invalid does not resolve" in reason, reason
        assert seconds < lookup + 0.5, (seconds, lookup)


def test_probe_says_unreachable_for_a_closed_port(
    noxfile: ModuleType, no_proxy: None, closed_port: int
) -> None:
    (ok, reason), seconds = timed(noxfile.probe_index, f"http://127.0.0.1:{closed_port}/whl/cpu", 1.0)
    assert (ok, reason) == (False, "connection refused")
    assert seconds < 1.5


def test_probe_gives_up_on_a_server_that_never_answers(
    noxfile: ModuleType, no_proxy: None, silent_port: int
) -> None:
    (ok, reason), seconds = timed(noxfile.probe_index, f"http://127.0.0.1:{silent_port}/whl/cpu", 0.5)
    assert not ok and "no answer" in reason, reason
    assert 0.4 < seconds < 1.2


def test_probe_says_reachable_for_an_index_that_serves_torch(noxfile: ModuleType, index_server: str) -> None:
    (ok, reason), seconds = timed(noxfile.probe_index, f"{index_server}/cpu", 1.0)
    assert ok, reason
    assert reason == f"HTTP 200 for {index_server}/cpu/torch/"
    assert seconds < 1.0
    ok, reason = noxfile.probe_index(
        f"{index_server}/cu999", 1.0
    )  # answers, but has no torch: pip would not use it
    assert not ok and "HTTP 404" in reason, reason


def test_probe_of_a_local_folder_index(noxfile: ModuleType, tmp_path: Path) -> None:
    assert noxfile.probe_index(tmp_path.as_uri())[0]
    assert not noxfile.probe_index((tmp_path / "missing").as_uri())[0]


def test_index_goes_to_pip_only_when_it_answers(
    noxfile: ModuleType, monkeypatch: pytest.MonkeyPatch, index_server: str, closed_port: int
) -> None:
    logged: list[str] = []
    monkeypatch.setenv("BENCH_TORCH_INDEX_BASE", index_server)
    index = noxfile.usable_index("cpu", logged.append, logged.append, timeout=1.0)
    assert index == f"{index_server}/cpu"
    assert noxfile.torch_install_args("cpu", index=index)[-2:] == ["--extra-index-url", f"{index_server}/cpu"]
    assert f"PyTorch's index {index_server}/cpu answers" in logged[-1]

    monkeypatch.setenv("BENCH_TORCH_INDEX_BASE", f"http://127.0.0.1:{closed_port}/whl")
    index = noxfile.usable_index("cpu", logged.append, logged.append, timeout=1.0)
    assert index == ""
    assert "--extra-index-url" not in noxfile.torch_install_args("cpu", index=index)
    assert (
        f"PyTorch's index http://127.0.0.1:{closed_port}/whl/cpu is unreachable (connection refused)"
        in logged[-1]
    )
    assert "installing PyPI's torch" in logged[-1]

    monkeypatch.setenv("BENCH_TORCH_INDEX_BASE", "")
    assert noxfile.usable_index("cpu", logged.append, logged.append) == ""
    assert "BENCH_TORCH_INDEX_BASE is empty" in logged[-1]


def test_docker_build_step_probes_before_pip(index_server: str, closed_port: int) -> None:
    """The script the Dockerfile runs (`install`) gives pip the index only when it answers."""
    script = str(ROOT / "scripts" / "torch_wheels.py")

    def dry_run(base: str, flavour: str) -> list[str]:
        command = [sys.executable, script, "install", "--index-base", base, "--flavour", flavour, "--dry-run"]
        result = subprocess.run(
            [*command, "torch==2.14.1", "torchvision==0.29.1"], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    answered = dry_run(index_server, "cpu")
    assert answered[0].startswith(f"PyTorch's index {index_server}/cpu answers")
    assert answered[1].endswith(
        f"-m pip install torch==2.14.1 torchvision==0.29.1 --extra-index-url {index_server}/cpu"
    )
    refused = dry_run(f"http://127.0.0.1:{closed_port}/whl", "cu128")
    assert "is unreachable (connection refused)" in refused[0] and "cu128" in refused[0]
    assert refused[1].endswith("-m pip install torch==2.14.1 torchvision==0.29.1")
    assert "--extra-index-url" not in dry_run("", "cpu")[1]
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "COPY scripts/torch_wheels.py" in dockerfile and "torch_wheels.py install" in dockerfile
    assert "!scripts/torch_wheels.py" in (ROOT / ".dockerignore").read_text().splitlines()


# --- the build an environment got --------------------------------------------------------------


def test_flavour_to_cuda_version(noxfile: ModuleType) -> None:
    assert noxfile.flavour_cuda("cu128") == "12.8"
    assert noxfile.flavour_cuda("cu130") == "13.0"
    assert noxfile.flavour_cuda("cu126") == "12.6"
    assert noxfile.flavour_cuda("cu118") == "11.8"
    assert noxfile.flavour_cuda("cpu") is None
    with pytest.raises(ValueError, match=r"rocm6\.2"):
        noxfile.flavour_cuda("rocm6.2")


def test_flavour_mismatch_is_said_with_the_driver_it_needs(noxfile: ModuleType) -> None:
    assert noxfile.flavour_mismatch("cu128", "12.8") is None
    assert noxfile.flavour_mismatch("cu130", "13.0") is None
    assert noxfile.flavour_mismatch("cpu", None) is None
    problem = noxfile.flavour_mismatch("cu128", "13.0", "2.14.1+cu130")
    assert problem and "cu128 (CUDA 12.8)" in problem and "2.14.1+cu130" in problem and "580" in problem
    assert "CPU-only" in noxfile.flavour_mismatch("cu128", None, "2.14.1+cpu")
    assert "not the CPU wheel" in noxfile.flavour_mismatch("cpu", "13.0", "2.14.1+cu130")
    assert noxfile.flavour_mismatch("cu126", "12.8")  # a minor version apart is another build too


def fake_site(root: Path) -> Path:
    """Installed-looking torch and torchvision: version.py files as the wheels ship them, metadata
    without the local label, and a torchvision whose import fails (as beside a mismatched torch)."""
    site = root / "site-packages"
    (site / "torchvision").mkdir(parents=True)
    (site / "torchvision" / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n"
    )
    (site / "torchvision" / "version.py").write_text(
        "__version__ = '0.29.1+cu130'\ngit_version = 'abc123'\nfrom torchvision.extension import _check_cuda_version\n"
        "if _check_cuda_version() > 0:\n    cuda = _check_cuda_version()\n"
    )
    (site / "torchvision-0.29.1.dist-info").mkdir()
    (site / "torchvision-0.29.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchvision\nVersion: 0.29.1\n"
    )
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text(
        "from torch import version\n__version__ = version.__version__\n"
    )
    (site / "torch" / "version.py").write_text(
        "from typing import Optional\n\n__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip']\n"
        "__version__ = '2.14.1+cu130'\ndebug = False\ncuda: Optional[str] = '13.0'\nhip: Optional[str] = None\n"
    )
    return site


def test_version_read_from_the_installed_files_without_importing(noxfile: ModuleType, tmp_path: Path) -> None:
    site = fake_site(tmp_path)
    before = sys.modules.get("torchvision")
    assert noxfile.package_version("torchvision", [str(site)]) == "0.29.1+cu130"  # not the metadata's 0.29.1
    assert sys.modules.get("torchvision") is before  # nothing was imported
    values = noxfile.torch_wheels.version_file_values("torch", [str(site)])
    assert values["__version__"] == "2.14.1+cu130" and values["cuda"] == "13.0" and values["hip"] is None
    assert noxfile.package_version("absent_package", [str(site)]) is None


def test_installed_line_and_warning_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """What the sessions and the image print, asked of an interpreter that sees the fake packages first."""
    site = fake_site(tmp_path)
    script = str(ROOT / "scripts" / "torch_wheels.py")
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, script, "installed", "--flavour", "cu128"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "installed: torch 2.14.1+cu130 (CUDA 13.0 build), torchvision 0.29.1+cu130"
    assert lines[1].startswith(
        "WARNING: asked for cu128 (CUDA 12.8), but torch 2.14.1+cu130 is a CUDA 13.0 build"
    )
    # a torch that does not import: its build is still read from its files, and the error recorded
    (site / "torch" / "__init__.py").write_text(
        "raise ImportError('libtorch_cpu.so: cannot open shared object file')\n"
    )
    result = subprocess.run(
        [sys.executable, script, "installed", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    build = json.loads(result.stdout)
    assert build["torch"] == "2.14.1+cu130" and build["cuda"] == "13.0"
    assert "libtorch_cpu.so" in build["torch_import_error"]


# --- one shared environment per torch build ------------------------------------------------------


class FakeSession:
    """Enough of nox.Session for torch_environment: records commands, makes venvs, answers the build."""

    def __init__(self, envdir: Path, name: str, build: dict[str, Any]) -> None:
        self.env_dir = envdir / name
        self.build = build
        self.commands: list[list[str]] = []
        self.envs: list[dict[str, str]] = []
        self.lines: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)

    warn = log

    def run(self, *args: str, env: dict[str, str] | None = None, **kwargs: Any) -> str:
        command = [str(arg) for arg in args]
        self.commands.append(command)
        self.envs.append(env or {})
        if command[1:3] in (["-m", "virtualenv"], ["-m", "venv"]):
            (Path(command[3]) / "bin").mkdir(parents=True)
            (Path(command[3]) / "bin" / "python").write_text("")
        if "installed" in command and "--json" in command:
            return "some warning torch printed\n" + json.dumps(self.build) + "\n"
        return ""

    def pips(self) -> list[list[str]]:
        return [command[command.index("install") + 1 :] for command in self.commands if "pip" in command]


@pytest.fixture
def envdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / ".nox"


CPU_BUILD = {"torch": "2.14.1+cpu", "cuda": None, "torchvision": "0.29.1+cpu"}
PYPI_BUILD = {"torch": "2.14.1+cu130", "cuda": "13.0", "torchvision": "0.29.1+cu130"}


def answers(monkeypatch: pytest.MonkeyPatch, noxfile: ModuleType, ok: bool) -> None:
    monkeypatch.setattr(
        noxfile, "probe_index", lambda url, timeout=2.0: (ok, "HTTP 200" if ok else "name does not resolve")
    )


def test_cpu_sessions_share_one_environment_built_once(
    noxfile: ModuleType, envdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers(monkeypatch, noxfile, True)
    first = FakeSession(envdir, "bench_cpu", CPU_BUILD)
    env = noxfile.torch_environment(first, "cpu")
    assert env.location == envdir / "torch-cpu"
    assert first.pips() == [
        [*noxfile.torch_install_args("cpu")],
        ["-e", ".[test]"],  # the test extras too: the tests session uses this environment
    ]
    stamp = json.loads((envdir / "torch-cpu" / ".bench-environment.json").read_text())
    assert stamp["installed"] == CPU_BUILD and stamp["index_used"] == "https://download.pytorch.org/whl/cpu"
    assert "installed: torch 2.14.1+cpu (CPU build), torchvision 0.29.1+cpu" in first.lines

    second = FakeSession(envdir, "tests", CPU_BUILD)
    probes: list[str] = []
    monkeypatch.setattr(noxfile, "probe_index", lambda url, timeout=2.0: probes.append(url) or (True, ""))
    assert noxfile.torch_environment(second, "cpu").location == env.location
    assert second.pips() == [] and probes == []  # nothing installed, the index not even asked
    assert any("up to date" in line for line in second.lines)
    # bench_torch at the .env pin shares it too; another release gets its own
    third = FakeSession(envdir, "bench_torch-torch=2.14.1", CPU_BUILD)
    assert noxfile.torch_environment(third, "cpu", version="2.14.1").location == env.location
    assert noxfile.torch_environment(third, "cpu", version="2.13.0").location == envdir / "torch-cpu-2.13.0"

    # the commands run in it see its bin first on PATH and the flavour asked for
    env.run(second, "pytest", "-q")
    assert second.commands[-1][0] == os.path.join(".nox", "torch-cpu", "bin", "pytest")
    assert second.envs[-1]["BENCH_REQUESTED_TORCH_FLAVOUR"] == "cpu"
    assert second.envs[-1]["PATH"].startswith(str(envdir / "torch-cpu" / "bin") + os.pathsep)


def test_unreachable_index_then_a_fallback_build_is_warned_stamped_and_retried(
    noxfile: ModuleType, envdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_CUDA_FLAVOUR", "cu128")
    answers(monkeypatch, noxfile, False)
    session = FakeSession(envdir, "bench_cuda", PYPI_BUILD)
    noxfile.torch_environment(session, "cu128")
    assert "--extra-index-url" not in session.pips()[0]
    assert any(
        "is unreachable (name does not resolve): installing PyPI's torch" in line for line in session.lines
    )
    assert any(
        "asked for cu128 (CUDA 12.8), but torch 2.14.1+cu130 is a CUDA 13.0 build" in line
        for line in session.lines
    )
    stamp = json.loads((envdir / "torch-cu128" / ".bench-environment.json").read_text())
    assert stamp["installed"]["cuda"] == "13.0" and stamp["index_used"] == ""  # what it really got

    again = FakeSession(envdir, "bench_cuda", PYPI_BUILD)  # still unreachable: kept, warned again
    noxfile.torch_environment(again, "cu128")
    assert again.pips() == []
    assert any(
        "is unreachable (name does not resolve): keeping .nox/torch-cu128" in line for line in again.lines
    ) and any("CUDA 13.0 build" in line for line in again.lines)

    answers(monkeypatch, noxfile, True)  # the index answers now: a fresh build from it
    cuda128 = {"torch": "2.14.1+cu128", "cuda": "12.8", "torchvision": "0.29.1+cu128"}
    retry = FakeSession(envdir, "bench_cuda", cuda128)
    noxfile.torch_environment(retry, "cu128")
    assert any(command[1:3] == ["-m", "virtualenv"] for command in retry.commands)
    assert retry.pips()[0][-2:] == ["--extra-index-url", "https://download.pytorch.org/whl/cu128"]
    assert not any("asked for" in line for line in retry.lines)
    stamp = json.loads((envdir / "torch-cu128" / ".bench-environment.json").read_text())
    assert stamp["installed"]["cuda"] == "12.8" and stamp["index_used"].endswith("/cu128")


def test_changed_settings_rebuild_and_a_changed_pyproject_reinstalls_the_project_only(
    noxfile: ModuleType, envdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_TORCH_INDEX_BASE", "")
    noxfile.torch_environment(FakeSession(envdir, "tests", PYPI_BUILD), "cpu")
    stamp_path = envdir / "torch-cpu" / ".bench-environment.json"
    stamp = json.loads(stamp_path.read_text())
    assert stamp["pyproject"] == hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()

    stamp["pyproject"] = "an older pyproject.toml"
    stamp_path.write_text(json.dumps(stamp))
    session = FakeSession(envdir, "tests", PYPI_BUILD)
    noxfile.torch_environment(session, "cpu")
    assert session.pips() == [["-e", ".[test]"]]

    monkeypatch.setenv("BENCH_TORCH_VERSION", "2.13.0")
    monkeypatch.setenv("BENCH_TORCHVISION_VERSION", "0.28.0")
    session = FakeSession(envdir, "tests", {**PYPI_BUILD, "torch": "2.13.0+cu130"})
    noxfile.torch_environment(session, "cpu")
    assert session.pips()[0] == ["torch==2.13.0", "torchvision==0.28.0"]
    assert any("torch 'torch==2.14.1' -> 'torch==2.13.0'" in line for line in session.lines)
    assert json.loads(stamp_path.read_text())["installed"]["torch"] == "2.13.0+cu130"


def test_the_index_is_judged_by_the_one_really_used(
    noxfile: ModuleType, envdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes: list[str] = []

    def probe(url: str, timeout: float = 2.0, ok: bool = False) -> tuple[bool, str]:
        probes.append(url)
        return ok, "HTTP 200" if ok else "name does not resolve"

    monkeypatch.setattr(noxfile, "probe_index", probe)
    noxfile.torch_environment(FakeSession(envdir, "bench_cpu", PYPI_BUILD), "cpu")  # index unreachable
    # PyPI only, asked for: that is what the environment has; nothing to install, nothing to probe
    monkeypatch.setenv("BENCH_TORCH_INDEX_BASE", "")
    probes.clear()
    session = FakeSession(envdir, "tests", PYPI_BUILD)
    noxfile.torch_environment(session, "cpu")
    assert session.pips() == [] and probes == []
    assert any("not the CPU wheel" in line for line in session.lines)  # still said

    # built from the index, then PyPI only asked for: another build, so a rebuild
    monkeypatch.delenv("BENCH_TORCH_INDEX_BASE")
    monkeypatch.setattr(noxfile, "probe_index", lambda url, timeout=2.0: probe(url, timeout, ok=True))
    session = FakeSession(envdir, "bench_cpu", CPU_BUILD)
    noxfile.torch_environment(session, "cpu")
    assert session.pips()[0][-1] == "https://download.pytorch.org/whl/cpu"
    monkeypatch.setenv("BENCH_TORCH_INDEX_BASE", "")
    session = FakeSession(envdir, "tests", PYPI_BUILD)
    noxfile.torch_environment(session, "cpu")
    assert session.pips()[0] == ["torch==2.14.1", "torchvision==0.29.1"]
    assert any("index 'https://download.pytorch.org/whl/cpu' -> ''" in line for line in session.lines)


def test_nox_says_nothing_about_a_missing_uv(noxfile: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    virtualenv = pytest.importorskip("nox.virtualenv")
    with caplog.at_level(logging.DEBUG):
        virtualenv.uv_version(str(ROOT / "no-such-uv"))  # what nox runs where uv is not installed
        logging.getLogger("nox").info("other lines still show")
    assert "uv binary not found" not in caplog.text
    assert "other lines still show" in caplog.text


# --- the GPU machine's packages, simulated (nox -s gpu_box) ------------------------------------------


class GpuBoxSession(FakeSession):
    """A FakeSession whose environment answers the gpu_box check with `facts`; session.error raises."""

    def __init__(self, envdir: Path, facts: dict[str, Any]) -> None:
        super().__init__(envdir, "gpu_box", {})
        self.facts = facts

    def run(self, *args: str, env: dict[str, str] | None = None, **kwargs: Any) -> str:
        output = super().run(*args, env=env, **kwargs)
        return json.dumps(self.facts) + "\n" if "-c" in args else output

    def error(self, message: str) -> None:
        raise RuntimeError(message)


GPU_BOX_FACTS = {
    "torch": "2.11.0+cu130",
    "torchvision": "0.26.0+cu130",
    "cuda": "13.0",
    "present": [],
    "project_installed": False,
}


def test_the_gpu_box_environment_has_that_machines_packages_and_is_built_once(
    noxfile: ModuleType, envdir: Path
) -> None:
    first = GpuBoxSession(envdir, GPU_BOX_FACTS)
    env = noxfile.gpu_box_environment(first)
    assert env.location == envdir / "gpu-box"
    # exactly the GPU machine's packages: its torch pair, no pydantic, no nox, the project not installed
    assert first.pips() == [list(noxfile.GPU_BOX_PACKAGES)]
    assert noxfile.GPU_BOX_PACKAGES[:2] == ("torch==2.11.0", "torchvision==0.26.0")
    assert not {"pydantic", "nox", "-e", "."} & {p.split("=")[0] for p in noxfile.GPU_BOX_PACKAGES}
    assert env.env()["PYTHONPATH"] == str(noxfile.ROOT)
    second = GpuBoxSession(envdir, GPU_BOX_FACTS)
    noxfile.gpu_box_environment(second)
    assert second.pips() == [] and any("up to date" in line for line in second.lines)
    # what the GPU machine does not have is an error, not a pass
    for facts, message in (
        ({**GPU_BOX_FACTS, "present": ["pydantic"]}, "pydantic installed"),
        ({**GPU_BOX_FACTS, "project_installed": True}, "PYTHONPATH alone"),
        (
            {**GPU_BOX_FACTS, "torch": "2.14.1+cu130"},
            "torch 2.14.1+cu130 and torchvision 0.26.0+cu130, not torch 2.11.0",
        ),
    ):
        with pytest.raises(RuntimeError, match=re.escape(message)):
            noxfile.gpu_box_environment(GpuBoxSession(envdir, facts))
