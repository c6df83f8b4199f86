"""What a failed case tells about itself: an allocation failure (OOM) or anything else, and whether the
device is still usable after it."""

from __future__ import annotations

import gc

import torch

from bench.core.errors import one_line
from bench.measure.devices import synchronize

OOM_ERRORS = (torch.cuda.OutOfMemoryError, MemoryError)  # torch.OutOfMemoryError is the same class
OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",  # the CPU allocator
    "Cannot allocate memory",
    "CUBLAS_STATUS_ALLOC_FAILED",  # cuBLAS creating its workspace on a full GPU
)


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA OOM, a CPU allocation failure, or Python's MemoryError."""
    if isinstance(error, OOM_ERRORS):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in OOM_MARKERS)


def release_memory(device: str) -> str | None:
    """Frees what a finished (or failed) case left behind; returns why the device is unusable, if it is.

    A CUDA error such as an illegal memory access is sticky: every later call on that device fails.
    """
    gc.collect()
    if not device.startswith("cuda"):
        return None
    try:
        synchronize(device)
        torch.cuda.empty_cache()
    except RuntimeError as error:
        return one_line(error, 300)
    return None
