"""Device names are validated before anything is measured."""

from __future__ import annotations

import time

import pytest
import torch

from bench.devices import default_devices, device_clock, parse_devices, synchronize
from bench.errors import UsageError
from tests.conftest import requires_cuda, requires_no_cuda


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


@requires_cuda
def test_cuda_index_past_the_last_gpu_is_rejected() -> None:
    count = torch.cuda.device_count()
    with pytest.raises(UsageError, match=f"this machine has {count} CUDA device"):
        parse_devices(f"cuda:{count}")
    assert parse_devices("cuda") == [f"cuda:{i}" for i in range(count)]


def test_default_devices_are_cpu_plus_visible_gpus() -> None:
    assert default_devices() == ["cpu", *[f"cuda:{i}" for i in range(torch.cuda.device_count())]]


def test_cpu_clock_is_the_plain_counter() -> None:
    assert device_clock("cpu") is time.perf_counter
    synchronize("cpu")  # a no-op that must not fail


@requires_cuda
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
