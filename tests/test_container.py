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


HARDENED_SERVICES = ("bench", "bench-cpu", "node0", "node1")


def _compose_config(env: dict[str, str] | None = None) -> dict:
    result = _run("docker", "compose", "--profile", "two-node", "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_locks_every_service_down(docker: None) -> None:
    """Read-only root with a tmpfs /tmp, no capabilities, no privilege gain, an init as PID 1, resource
    limits, the data volume reached through the image's group: `docker compose config`, no build."""
    config = _compose_config()
    for name in HARDENED_SERVICES:
        service = config["services"][name]
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["init"] is True, name  # docker stop's SIGTERM reaches bench, not an ignoring PID 1
        assert any(mount.startswith("/tmp:") and "size=" in mount for mount in service["tmpfs"]), name
        assert int(service["mem_limit"]) == 16 * 2**30, name
        assert "cpus" not in service or float(service["cpus"]) == 0, name  # default: all the host's CPUs
        assert service["pids_limit"] == 4096, name
        assert service["group_add"] == ["1000"], name
        if "build" in service:
            assert service["build"]["args"]["BASE_IMAGE"] == "python:3.11-slim", name


def test_compose_limits_and_base_image_come_from_the_environment(docker: None) -> None:
    pinned = "python:3.11-slim@sha256:" + "0" * 64
    config = _compose_config(
        {
            "BENCH_MEM_LIMIT": "3g",
            "BENCH_CPUS": "1.5",
            "BENCH_PIDS_LIMIT": "512",
            "BENCH_TMP_SIZE": "256m",
            "BENCH_BASE_IMAGE": pinned,
            "BENCH_IMAGE_GID": "4321",
        }
    )
    for name in HARDENED_SERVICES:
        service = config["services"][name]
        assert int(service["mem_limit"]) == 3 * 2**30, name
        assert float(service["cpus"]) == 1.5, name
        assert service["pids_limit"] == 512, name
        assert "/tmp:size=256m,mode=1777" in service["tmpfs"], name
        assert service["group_add"] == ["4321"], name
    for name in ("bench", "bench-cpu"):
        assert config["services"][name]["build"]["args"]["BASE_IMAGE"] == pinned


def test_dockerfile_records_its_base_and_keeps_the_data_volume_to_its_user() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\nARG BASE_IMAGE\n" in text
    assert 'org.opencontainers.image.base.name="${BASE_IMAGE}"' in text
    assert "BENCH_BASE_IMAGE=${BASE_IMAGE}" in text
    assert "1777" not in text and "chown bench:bench /app/results /data" in text
    assert "USER ${BENCH_UID}:${BENCH_GID}" in text  # numeric: runAsNonRoot can verify it


def test_pytorchjob_pods_are_locked_down_and_bounded() -> None:
    yaml = pytest.importorskip("yaml")
    job = yaml.safe_load((ROOT / "docker" / "pytorchjob.yaml").read_text())
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}
    for role, replica in replicas.items():
        pod = replica["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, role
        assert pod["securityContext"]["runAsUser"] != 0, role
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, role
        assert security["readOnlyRootFilesystem"] is True, role
        assert security["capabilities"]["drop"] == ["ALL"], role
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (role, kind)
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert volumes["shm"]["emptyDir"]["medium"] == "Memory" and volumes["shm"]["emptyDir"]["sizeLimit"]
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert {"/dev/shm", "/tmp", "/app/results", "/data"} <= mounts, role  # all it writes, root read-only


def test_cpu_image_runs_the_benchmark_and_leaves_tables_owned_by_the_caller(docker: None) -> None:
    environment = {"BENCH_TORCH_INDEX_BASE": os.environ.get("BENCH_TORCH_INDEX_BASE", "")}
    build = _run("docker", "compose", "build", "bench-cpu", env=environment)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]

    user = _run("docker", "image", "inspect", CPU_IMAGE, "--format", "{{.Config.User}}").stdout.strip()
    assert user and user not in ("root", "0", "0:0"), f"the image runs as {user!r}"
    base = _run(
        "docker", "image", "inspect", CPU_IMAGE, "--format",
        '{{index .Config.Labels "org.opencontainers.image.base.name"}}',
    ).stdout.strip()  # fmt: skip
    assert base == "python:3.11-slim"

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
        assert data["env"]["container"]["base_image"] == "python:3.11-slim"
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


def test_the_running_container_is_locked_down(docker: None) -> None:
    """What compose config promises, seen from inside: an init as PID 1, a read-only root, no
    capabilities, no privilege gain, the limits, the base image recorded, /data writable by the caller
    through the image's group (not by everyone)."""
    environment = {"BENCH_TORCH_INDEX_BASE": os.environ.get("BENCH_TORCH_INDEX_BASE", "")}
    if _run("docker", "image", "inspect", CPU_IMAGE).returncode != 0:
        build = _run("docker", "compose", "build", "bench-cpu", env=environment)
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (ROOT / "results").mkdir(exist_ok=True)
    probe = (
        "tr '\\0' ' ' < /proc/1/cmdline; echo; "
        "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; "
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max 2>/dev/null; "  # cgroup v2
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max 2>/dev/null; "  # v1
        "touch /app/probe 2>/dev/null && echo root-writable || echo root-read-only; "
        "touch /tmp/probe && echo tmp-writable; "
        "touch /data/probe && echo data-writable && rm /data/probe; "
        "stat -c '%a %u:%g' /data; echo base=$BENCH_BASE_IMAGE"
    )
    ids = {"BENCH_UID": str(os.getuid()), "BENCH_GID": str(os.getgid()), "BENCH_MEM_LIMIT": "3g"}
    result = _run(
        "docker", "compose", "run", "--rm", "--entrypoint", "sh", "bench-cpu", "-c", probe,
        env={**environment, **ids},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "init" in lines[0].split()[0], lines  # docker-init (tini): SIGTERM reaches bench
    assert "CapEff:\t0000000000000000" in lines and "NoNewPrivs:\t1" in lines, lines
    assert str(3 * 2**30) in lines and "4096" in lines, lines  # cgroup v2 limits (memory, pids)
    assert "root-read-only" in lines and "tmp-writable" in lines and "data-writable" in lines, lines
    assert "2775 1000:1000" in lines and "base=python:3.11-slim" in lines, lines


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
        assert data["state"] == "complete" and data["processes"]["nnodes"] == 2  # schema 3: its own section
        together = [case for case in data["cases"] if case["key"]["world_size"] == 2]
        assert together and all(case["status"] == "ok" for case in data["cases"]), data["cases"]
        for case in together:
            assert case["backend"] == "gloo" and case["nnodes"] == 2
            assert all(len(record["per_rank_s"]) == 2 for record in case["passes"])
        assert "## Across processes" in (ROOT / "results" / folder / "summary.md").read_text()
    finally:
        _run("docker", "compose", "--profile", "two-node", "down", "--remove-orphans", env=env)
        shutil.rmtree(ROOT / "results" / folder, ignore_errors=True)
