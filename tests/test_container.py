"""The CPU image end to end with Docker Compose, and the GPU service's configuration.

Run by `nox -s container` (and so by .ci/run): prepares Docker with the project's setup script
(engine, Compose plugin, a stand-in python:3.11-slim), builds the CPU image, runs a quick benchmark
in it and checks the tables on the host, then removes the image and the build cache. Where Docker
cannot be prepared (the script exits 3 when disk is short) the tests are skipped with its words.
Self-contained on purpose: it runs with --noconftest in an environment without torch.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parent.parent
SETUP_SCRIPTS = (ROOT.parent / "shared" / "ci" / "docker-setup.sh", ROOT / ".ci" / "docker-setup.sh")
CPU_IMAGE = "torch-bench:cpu"


def _run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def docker() -> Iterator[None]:
    """Docker engine + Compose ready (installed by the setup script if needed); cleans up afterwards."""
    if shutil.which("docker") is None and not any(path.exists() for path in SETUP_SCRIPTS):
        pytest.skip("no docker client and no docker-setup.sh to install one")
    if _run("docker", "compose", "version").returncode != 0 or _run("docker", "info").returncode != 0:
        script = next((path for path in SETUP_SCRIPTS if path.exists()), None)
        if script is None:
            pytest.skip("Docker is not running and no docker-setup.sh was found")
        setup = _run("bash", str(script))
        if setup.returncode == 3:
            pytest.skip(f"Docker could not be prepared here: {setup.stderr.strip().splitlines()[-1]}")
        assert setup.returncode == 0, setup.stdout + setup.stderr
    yield
    _run("docker", "compose", "down", "--volumes", "--remove-orphans")
    _run("docker", "image", "rm", "-f", CPU_IMAGE)
    _run("docker", "builder", "prune", "-f")


def test_compose_configuration_is_valid_including_the_gpu_service(docker: None) -> None:
    result = _run("docker", "compose", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    gpu = config["services"]["bench"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"] and gpu["count"] in ("all", -1)
    cpu = config["services"]["bench-cpu"]
    assert "deploy" not in cpu
    assert any(volume["target"] == "/app/results" for volume in cpu["volumes"])
    assert cpu["shm_size"] in ("1gb", 1073741824, "1073741824")


def test_cpu_image_runs_the_benchmark_and_leaves_tables_owned_by_the_caller(docker: None) -> None:
    environment = {"BENCH_TORCH_INDEX_BASE": os.environ.get("BENCH_TORCH_INDEX_BASE", "")}
    build = _run("docker", "compose", "build", "bench-cpu", env=environment)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]

    user = _run("docker", "image", "inspect", CPU_IMAGE, "--format", "{{.Config.User}}").stdout.strip()
    assert user and user not in ("root", "0", "0:0"), f"the image runs as {user!r}"

    (ROOT / "results").mkdir(exist_ok=True)
    folder = f"container-test-{uuid.uuid4().hex[:8]}"
    ids = {"BENCH_UID": str(os.getuid()), "BENCH_GID": str(os.getgid())}
    try:
        run = _run(
            "docker", "compose", "run", "--rm", "bench-cpu", "run", "--quick", "--dataset", "synthetic",
            "--out", f"results/{folder}", env={**environment, **ids},
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        output = ROOT / "results" / folder
        for name in ("summary.md", "results.csv", "results.json", "pytest-benchmark.json"):
            path = output / name
            assert path.is_file(), name
            assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid()), name
        data = json.loads((output / "results.json").read_text())
        assert data["env"]["container"]["in_container"] is True
        assert data["env"]["container"]["image"] == CPU_IMAGE
        assert data["state"] == "complete" and data["cases"]
        assert all(case["status"] == "ok" for case in data["cases"]), data["cases"]
        # throughput from the table (results.json keeps the raw timings, not the derived rate)
        with (output / "results.csv").open(newline="") as file:
            rows = list(csv.DictReader(file))
        assert len(rows) == len(data["cases"])
        for row in rows:
            assert row["status"] == "ok", row
            assert 100 < float(row["samples_per_s"]) < 1e9, row  # a sane throughput for this MLP on a CPU
        assert "Throughput (samples/s" in (output / "summary.md").read_text()
    finally:
        shutil.rmtree(ROOT / "results" / folder, ignore_errors=True)


def test_two_nodes_on_the_compose_network_train_one_model_together(docker: None) -> None:
    """node0 and node1 (services of compose.yaml) start torchrun each, meet at node0's rendezvous and run
    a 2-node x 1-process gloo data-parallel case; rank 0, on either node, writes the tables."""
    environment = {"BENCH_TORCH_INDEX_BASE": os.environ.get("BENCH_TORCH_INDEX_BASE", "")}
    if _run("docker", "image", "inspect", CPU_IMAGE).returncode != 0:
        build = _run("docker", "compose", "build", "bench-cpu", env=environment)
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (ROOT / "results").mkdir(exist_ok=True)
    folder = f"two-node-test-{uuid.uuid4().hex[:8]}"
    env = {
        **environment,
        "BENCH_UID": str(os.getuid()),
        "BENCH_GID": str(os.getgid()),
        "BENCH_TWO_NODE_OUT": f"results/{folder}",
    }
    try:
        up = _run(
            "docker", "compose", "up", "node0", "node1", "--abort-on-container-exit", "--exit-code-from", "node0",
            env=env, timeout=900,
        )  # fmt: skip
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-3000:]
        data = json.loads((ROOT / "results" / folder / "results.json").read_text())
        assert data["state"] == "complete" and data["env"]["processes"]["nnodes"] == 2
        together = [case for case in data["cases"] if case["world_size"] == 2]
        assert together and all(case["status"] == "ok" for case in data["cases"]), data["cases"]
        for case in together:
            assert case["backend"] == "gloo" and case["nnodes"] == 2
            assert all(len(record["per_rank_s"]) == 2 for record in case["passes"])
        assert "## Across processes" in (ROOT / "results" / folder / "summary.md").read_text()
    finally:
        _run("docker", "compose", "--profile", "two-node", "down", "--remove-orphans", env=env)
        shutil.rmtree(ROOT / "results" / folder, ignore_errors=True)
