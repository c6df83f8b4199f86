"""The wheel settings live in one place (.env) and reach both the Nox sessions and the Docker build."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

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


def test_env_file_defaults_reach_the_pip_arguments(noxfile: ModuleType) -> None:
    settings = noxfile.torch_settings()
    assert settings["BENCH_TORCH_INDEX_BASE"] == "https://download.pytorch.org/whl"
    pin, vision = settings["BENCH_TORCH_VERSION"], settings["BENCH_TORCHVISION_VERSION"]
    assert noxfile.torch_install_args("cpu") == [
        f"torch=={pin}" if pin else "torch",
        f"torchvision=={vision}" if vision else "torchvision",
        "--extra-index-url",
        "https://download.pytorch.org/whl/cpu",
    ]
    flavour = settings["BENCH_CUDA_FLAVOUR"]
    assert noxfile.torch_install_args(flavour)[-1] == f"https://download.pytorch.org/whl/{flavour}"


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
    for config in ("compose.yaml", "docker/Dockerfile", "noxfile.py"):  # the URL lives in .env only
        assert "download.pytorch.org" not in (ROOT / config).read_text(), config
