"""How long an epoch waits for its next batch: the clock of the loader's data path.

The chapter's DataLoader works on the host: a host clock around each fetch. The resident loader's
gather is an asynchronous GPU kernel: CUDA events around each fetch, read after the epoch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class HostDataClock:
    """Host time spent waiting for the loader's next batch (right wherever the loader works on the host)."""

    name = "host clock"

    def __init__(self) -> None:
        self._seconds = 0.0

    def fetch(self, iterator: Iterator[Batch]) -> Batch:
        start = time.perf_counter()
        try:
            return next(iterator)
        finally:
            self._seconds += time.perf_counter() - start

    def seconds(self) -> float:
        return self._seconds


class CudaEventDataClock:
    """GPU time of a data path that runs on the GPU: CUDA events around each fetch, read after the epoch.

    The resident loader's gather is an asynchronous kernel: a host clock would time its launch only.
    The events are made before the epoch (`batches` pairs; creating two per batch inside it cost
    4-6% of a GPU step), and recorded only around a fetch that launches a gather: once the planned
    batches are fetched, the end of the epoch is asked for without events.
    """

    name = "cuda events"

    def __init__(self, batches: int | None = None) -> None:
        self._pairs = [self._pair() for _ in range(batches or 0)]
        self._planned = batches  # None: not known, every fetch is timed
        self._used = 0

    @staticmethod
    def _pair() -> tuple[torch.cuda.Event, torch.cuda.Event]:
        return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def fetch(self, iterator: Iterator[Batch]) -> Batch:
        if self._used == self._planned:
            self._planned = None
            # the planned end of the epoch (StopIteration): it launches nothing, so nothing is recorded
            # (were the plan short, that one batch goes untimed and the rest are timed as they come)
            return next(iterator)
        if self._used == len(self._pairs):
            self._pairs.append(self._pair())
        start, end = self._pairs[self._used]
        start.record()
        batch = next(iterator)
        end.record()
        self._used += 1
        return batch

    @property
    def events_made(self) -> int:
        return 2 * len(self._pairs)

    def seconds(self) -> float:
        """Valid after the device was synchronized (the epoch's final wait)."""
        return sum(start.elapsed_time(end) for start, end in self._pairs[: self._used]) / 1000


DataClock = HostDataClock | CudaEventDataClock
