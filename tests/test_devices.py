"""Device names are validated before anything is measured."""

from __future__ import annotations

import time

import pytest
import torch

from bench.core.errors import UsageError
from bench.measure.devices import (
    MIN_ROUND_S,
    SYNC_SHARE_BOUND,
    clock_overhead,
    default_devices,
    device_clock,
    min_round_s,
    parse_devices,
    synchronize,
)
from tests.conftest import cuda_test, requires_no_cuda


def test_cpu_parses_and_repeats_collapse() -> None:
    assert parse_devices("cpu, CPU,cpu") == ["cpu"]


@pytest.mark.parametrize("text", ["gpu", "tpu:0", "cpu,mps"])
def test_unknown_device_names_the_entry_and_the_choices(text: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_devices(text)
    assert "unknown device" in str(error.value) and "cuda:N" in str(error.value)


def test_empty_device_list_is_rejected() -> None:
    with pytest.raises(UsageError, match="no device given"):
        parse_devices(" , ")


@requires_no_cuda
@pytest.mark.parametrize("text", ["cuda", "cuda:0", "cpu,cuda:3"])
def test_cuda_without_a_gpu_says_why(text: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_devices(text)
    assert "is not available" in str(error.value)
    assert "--devices cpu" in str(error.value)


@cuda_test
def test_cuda_index_past_the_last_gpu_is_rejected() -> None:
    count = torch.cuda.device_count()
    with pytest.raises(UsageError, match=f"this machine has {count} CUDA device"):
        parse_devices(f"cuda:{count}")
    assert parse_devices("cuda") == [f"cuda:{i}" for i in range(count)]


def test_default_devices_start_with_the_cpu_and_parse_back_to_themselves() -> None:
    devices = default_devices()
    assert devices[0] == "cpu" and len(devices) == len(set(devices))
    assert parse_devices(",".join(devices)) == devices  # every default is a valid, canonical name
    assert all(name.startswith("cuda:") for name in devices[1:])


def test_cpu_clock_is_the_plain_counter() -> None:
    assert device_clock("cpu") is time.perf_counter
    synchronize("cpu")  # a no-op that must not fail


def test_the_clock_overhead_is_measured_and_sets_the_round_length() -> None:
    overhead = clock_overhead("cpu")
    assert 0 < overhead < 1e-4  # a perf_counter read: well under a microsecond to tens of microseconds
    assert min_round_s(overhead) == MIN_ROUND_S  # the 1 ms floor already keeps it far under 1%
    assert min_round_s(5e-5) == pytest.approx(5e-5 / SYNC_SHARE_BOUND)  # a slow sync lengthens rounds
    assert 5e-5 / min_round_s(5e-5) <= SYNC_SHARE_BOUND


@cuda_test
def test_cuda_clock_overhead_stays_under_one_percent_of_a_round() -> None:
    overhead = clock_overhead("cuda:0")
    assert overhead > 0 and overhead / min_round_s(overhead) <= SYNC_SHARE_BOUND


@cuda_test
def test_cuda_clock_waits_for_queued_work() -> None:
    clock = device_clock("cuda:0")
    x = torch.randn(4096, 4096, device="cuda:0")
    torch.cuda.synchronize()
    start = clock()
    for _ in range(20):
        x = x @ x
        x = x / x.norm()
    waited = clock() - start
    start = time.perf_counter()
    for _ in range(20):
        x = x @ x
        x = x / x.norm()
    launched = time.perf_counter() - start
    torch.cuda.synchronize()
    assert waited > launched


@cuda_test
def test_graph_captures_share_one_side_stream_warmed_with_cublas() -> None:
    """A new side stream per capture costs a cuBLAS workspace each: every capture reuses the device's
    one, which prepare_device warms, so a second and third capture reserve no new workspace."""
    from bench.measure.devices import prepare_device, side_stream
    from bench.measure.model import build_training
    from bench.measure.modes import GraphedTraining

    prepare_device("cuda:0")
    assert side_stream("cuda:0") is side_stream(torch.device("cuda", 0))
    graphed = GraphedTraining(build_training("cuda:0"))
    images, labels = (
        torch.randn(64, 1, 28, 28, device="cuda:0"),
        torch.zeros(64, dtype=torch.long, device="cuda:0"),
    )
    graphed.step(images, labels)
    torch.cuda.synchronize()
    reserved = torch.cuda.memory_reserved("cuda:0")
    for batch in (32, 16):
        graphed.step(images[:batch], labels[:batch])
    torch.cuda.synchronize()
    grown = torch.cuda.memory_reserved("cuda:0") - reserved
    assert grown < 16 * 2**20, f"captures reserved {grown / 2**20:.0f} MiB more: a new cuBLAS workspace each?"
