"""Cases across processes, run by the ranks torchrun starts: data-parallel (DDP) and side by side.

PyTorch's own engine does the work: `torch.distributed` (gloo on the CPU, NCCL on GPUs) and
`DistributedDataParallel`, the processes started by torchrun (`torch.distributed.run`), whose
environment contract (RANK, LOCAL_RANK, WORLD_SIZE, the rendezvous) SLURM and Kubernetes use too.

How a case is measured across ranks:
* every timed round (or epoch) starts after a barrier on a gloo control group
  (`monitored_barrier`, which names the ranks that did not arrive), and each rank's time is kept;
* calls per round are calibrated in lockstep (the slowest rank's round decides for all), so every
  rank runs the same number of steps, as DDP's collectives require;
* throughput is the samples of all ranks over the slowest rank's time;
* data-parallel cases also time the gradient all-reduce alone (`comm_s`), so a user sees when
  communication dominates this 50k-parameter model.

Collectives and rendezvous have timeouts (`COLLECTIVE_TIMEOUT`), so a rank that dies or hangs ends
the worker group within about half a minute; the supervisor (`bench.launch`) then records the case
as an error naming the rank and the cause, and starts the group again for the cases left.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from bench.catalog import RUNS, workload
from bench.data import Dataset, ResidentBatches, fixed_batch, normalize
from bench.devices import device_clock, synchronize
from bench.memory import MemoryMonitor
from bench.model import Training, accuracy, build_training
from bench.plan import CaseKey, Item, Options
from bench.results import PassRecord
from bench.workloads import (
    STEPS,
    WARMUP_CALLS,
    CudaEventDataClock,
    EpochSource,
    HostDataClock,
    timed_epoch,
    warm_up,
)

COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("BENCH_COLLECTIVE_TIMEOUT_S", "30")))
SOLO_TIMEOUT = datetime.timedelta(hours=2)  # the other ranks waiting while rank 0 measures a one-process case
MAX_CALLS_PER_ROUND = 1 << 20


@dataclass
class World:
    """This process's place among the ranks, and the groups it talks through."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    backend: str
    device: torch.device
    control: Any  # a gloo group for barriers and small gathers, whatever the backend

    @property
    def nnodes(self) -> int:
        return max(1, self.size // max(self.local_size, 1))

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @classmethod
    def join(cls, device_type: str) -> World:
        """Joins the process group torchrun set up (timeouts on the rendezvous and on every collective)."""
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device_type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            device, backend = torch.device("cpu"), "gloo"
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
        control = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)
        return cls(
            rank=dist.get_rank(),
            size=dist.get_world_size(),
            local_rank=local_rank,
            local_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(dist.get_world_size()))),
            backend=backend,
            device=device,
            control=control,
        )

    def barrier(self, timeout: datetime.timedelta = COLLECTIVE_TIMEOUT) -> None:
        """Every rank here before any goes on; a rank that does not come within `timeout` is named."""
        dist.monitored_barrier(group=self.control, timeout=timeout, wait_all_ranks=True)

    def largest(self, value: float) -> float:
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.control)
        return float(tensor.item())

    def gather(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value, group=self.control)
        return values

    def decide(self, decision: Any = None) -> Any:
        """Rank 0's decision, broadcast to every rank (what to do with the next item)."""
        box = [decision]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def leave(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def ddp_training(world: World, seed: int = 0) -> Training:
    """The chapter's model wrapped in DistributedDataParallel; the optimizer over the same parameters."""
    from torch.nn.parallel import DistributedDataParallel

    base = build_training(world.device, seed)
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    wrapped = DistributedDataParallel(base.net, device_ids=device_ids)
    return Training(net=wrapped, criterion=base.criterion, optimizer=base.optimizer, device=world.device)  # type: ignore[arg-type]


def training_for(world: World, key: CaseKey, seed: int = 0) -> Training:
    """Data-parallel cases train one model together; side-by-side copies each train their own."""
    return ddp_training(world, seed) if key.world_size > 1 else build_training(world.device, seed)


def comm_seconds(world: World, training: Training, calls: int = 50) -> float:
    """The gradient all-reduce alone, per step: a flat tensor of the gradients' size, timed between barriers."""
    flat = torch.cat([p.detach().reshape(-1) for p in training.net.parameters()])
    clock = device_clock(world.device)
    for _ in range(5):
        dist.all_reduce(flat)
    world.barrier()
    start = clock()
    for _ in range(calls):
        dist.all_reduce(flat)
    return world.largest((clock() - start) / calls)


def lockstep_rounds(
    world: World, step: Callable[[], None], min_round_s: float, seconds: float, min_rounds: int
) -> tuple[list[float], int]:
    """Rounds of `step` on every rank at once: each rank's per-call seconds per round, and calls per round.

    Calls per round grow until the slowest rank's round lasts `min_round_s`; rounds are as many as
    fill `seconds` (at least `min_rounds`); every rank takes the same numbers from the slowest one.
    """
    clock = device_clock(world.device)
    calls = 1
    while True:
        world.barrier()
        start = clock()
        for _ in range(calls):
            step()
        longest = world.largest(clock() - start)
        if longest >= min_round_s or calls >= MAX_CALLS_PER_ROUND:
            break
        calls = min(MAX_CALLS_PER_ROUND, max(calls * 2, math.ceil(calls * min_round_s / max(longest, 1e-9))))
    rounds = max(min_rounds, math.ceil(seconds / max(longest, 1e-9)))
    per_call = []
    for _ in range(rounds):
        world.barrier()
        start = clock()
        for _ in range(calls):
            step()
        per_call.append((clock() - start) / calls)
    return per_call, calls


def sharded_source(world: World, dataset: Dataset, key: CaseKey, seed: int) -> EpochSource:
    """The resident loader, each rank keeping its shard of every epoch (data-parallel), or all of it."""
    shard = (world.rank, world.size) if key.world_size > 1 else (0, 1)
    resident = ResidentBatches(
        dataset.train_images, dataset.train_labels, world.device, seed=seed, shard=shard
    )
    clock = CudaEventDataClock if world.device.type == "cuda" else HostDataClock
    return EpochSource(lambda: resident.batches(key.batch_size), clock)


def slowest(per_rank: list[list[float]]) -> list[float]:
    """Unit by unit, the slowest rank's seconds: what all the ranks' samples took together."""
    return [max(values) for values in zip(*per_rank, strict=True)]


class ParallelMeasure:
    """Measures one item across every rank; rank 0 gets the pass records, the others None."""

    def __init__(self, world: World, dataset: Dataset, options: Options, min_round_s: float) -> None:
        self.world, self.dataset, self.options, self.min_round_s = world, dataset, options, min_round_s

    def measure(self, item: Item) -> tuple[list[PassRecord], int, dict[str, Any]] | None:
        """(records, samples per unit of all ranks together, case facts) on rank 0; None elsewhere."""
        timing = workload(item.key.workload).timing
        if timing == RUNS:
            return self.runs(item)
        if workload(item.key.workload).in_rounds:
            return self.rounds(item)
        return self.epochs(item)

    def _facts(self) -> dict[str, Any]:
        return {"backend": self.world.backend, "nnodes": self.world.nnodes}

    def rounds(self, item: Item) -> tuple[list[PassRecord], int, dict[str, Any]] | None:
        key, world = item.key, self.world
        monitor = MemoryMonitor(world.device)
        with monitor:
            training = training_for(world, key)
            inputs, labels = fixed_batch(
                self.dataset, key.batch_size, world.device, offset=world.rank * key.batch_size
            )
            step = STEPS[workload(key.workload).step or ""](training, inputs, labels)
            for _ in range(WARMUP_CALLS):
                step()
            synchronize(world.device)
            per_call, calls = lockstep_rounds(
                world,
                step,
                self.min_round_s,
                self.options.max_time / self.options.passes,
                self.options.min_rounds,
            )
            comm = comm_seconds(world, training) if key.world_size > 1 else None
        per_rank = world.gather(per_call)
        if not world.leader:
            return None
        record = PassRecord(
            index=item.pass_index,
            samples_s=slowest(per_rank),
            calls_per_round=calls,
            timer="lockstep rounds between barriers",
            min_round_s=self.min_round_s,
            per_rank_s=per_rank,
            comm_s=comm,
            memory=monitor.reading,
        )
        return [record], key.batch_size * world.size, self._facts()

    def epochs(self, item: Item) -> tuple[list[PassRecord], int, dict[str, Any]] | None:
        key, world = item.key, self.world
        if key.loader != "resident":
            raise ValueError("epochs across processes use the resident loader (each rank its shard)")
        monitor = MemoryMonitor(world.device)
        with monitor:
            training = training_for(world, key)
            source = sharded_source(world, self.dataset, key, seed=item.pass_index)
            warm_up(training, source, len(self.dataset.train_labels), key.batch_size)
            timings = []
            for _ in range(item.repeats):
                world.barrier()
                timings.append(timed_epoch(training, source))
                monitor.sample()
            comm = comm_seconds(world, training) if key.world_size > 1 else None
        per_rank = world.gather([t.seconds for t in timings])
        samples = sum(world.gather(timings[0].samples))
        if not world.leader:
            return None
        record = PassRecord(
            index=item.pass_index,
            samples_s=slowest(per_rank),
            data_seconds=[t.data_seconds for t in timings],
            data_timer=timings[0].data_timer,
            batches=timings[0].batches,
            per_rank_s=per_rank,
            comm_s=comm,
            memory=monitor.reading,
        )
        return [record], samples, self._facts()

    def runs(self, item: Item) -> tuple[list[PassRecord], int, dict[str, Any]] | None:
        """Data-parallel training runs: every rank trains the one model on its shard; rank 0 evaluates."""
        key, world = item.key, self.world
        records, samples = [], 0
        test_inputs = normalize(self.dataset.test_images).to(world.device)
        test_labels = self.dataset.test_labels.to(world.device)
        for run_index in range(item.first, item.first + item.repeats):
            training = training_for(world, key, seed=run_index)
            source = sharded_source(world, self.dataset, key, seed=run_index)
            warm_up(training, source, len(self.dataset.train_labels), key.batch_size)
            seconds, accuracies, losses = [], [], []
            for _ in range(self.options.epochs):
                world.barrier()
                timing = timed_epoch(training, source, sum_loss=True)
                assert timing.loss_sum is not None
                seconds.append(timing.seconds)
                losses.append(timing.loss_sum.item() / max(timing.batches, 1))
                samples = timing.samples
                accuracies.append(accuracy(training.net, test_inputs, test_labels) if world.leader else 0.0)
            per_rank = world.gather(seconds)
            total = sum(world.gather(samples))
            if world.leader:
                records.append(
                    PassRecord(
                        index=run_index, seed=run_index, samples_s=slowest(per_rank), test_accuracy=accuracies,
                        mean_loss=[*losses], per_rank_s=per_rank,
                    )
                )  # fmt: skip
                samples = total
        if not world.leader:
            return None
        return records, samples, self._facts()


def wait_for_leader(world: World) -> None:
    """The other ranks while rank 0 measures a one-process case alone."""
    world.barrier(SOLO_TIMEOUT)
