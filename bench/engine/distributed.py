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
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bench.analysis.collectives import bus_bandwidth
from bench.core.catalog import Timing, workload
from bench.core.envvars import env_float, env_int
from bench.core.keys import CaseKey
from bench.core.plan import Item, Options
from bench.core.records import PassRecord
from bench.env.contention import Watch
from bench.measure.data import Dataset
from bench.measure.data_clocks import CudaEventDataClock, HostDataClock
from bench.measure.devices import device_clock, synchronize
from bench.measure.energy import EnergyMeter
from bench.measure.loaders import ResidentBatches
from bench.measure.memory import MemoryMonitor
from bench.measure.model import Training, build_training
from bench.measure.profiling import profile_name, profile_steps, profiled_workload
from bench.measure.records import Measured, Placement, measure_epochs, measure_runs
from bench.measure.workloads import STEPS, WARMUP_CALLS, EpochSource, case_batch

COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=env_float("BENCH_COLLECTIVE_TIMEOUT_S", 30))
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
        local_rank = env_int("LOCAL_RANK", 0)
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
            local_size=env_int("LOCAL_WORLD_SIZE", dist.get_world_size()),
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


def ddp_training(world: World, key: CaseKey, seed: int = 0) -> Training:
    """The case's model wrapped in DistributedDataParallel; the optimizer over the same parameters."""
    from torch.nn.parallel import DistributedDataParallel

    base = build_training(world.device, seed, model=key.model, batch_size=key.batch_size)
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    wrapped = DistributedDataParallel(base.net, device_ids=device_ids)
    return replace(base, net=wrapped)


def training_for(world: World, key: CaseKey, seed: int = 0) -> Training:
    """Data-parallel cases train one model together; side-by-side copies each train their own."""
    if key.world_size > 1:
        return ddp_training(world, key, seed)
    return build_training(world.device, seed, model=key.model, batch_size=key.batch_size)


def allreduce_seconds(world: World, flat: torch.Tensor, calls: int) -> float:
    """Seconds per all-reduce of `flat` on every rank, warmed up, timed between barriers (the slowest rank)."""
    clock = device_clock(world.device)
    for _ in range(5):
        dist.all_reduce(flat)
    world.barrier()
    start = clock()
    for _ in range(calls):
        dist.all_reduce(flat)
    return world.largest((clock() - start) / calls)


def comm_seconds(world: World, training: Training, calls: int = 50) -> tuple[float, int]:
    """The gradient all-reduce alone, per step: a flat tensor of the gradients' size. (seconds, bytes)"""
    flat = torch.cat([p.detach().reshape(-1) for p in training.net.parameters()])
    return allreduce_seconds(world, flat, calls), flat.numel() * flat.element_size()


LINK_PROBE_BYTES = {"cpu": 16 * 2**20, "cuda": 256 * 2**20}


def link_bus_bandwidth(world: World, calls: int = 10) -> float | None:
    """Bytes/s of bus bandwidth (nccl-tests' busbw) of a large all-reduce between the ranks: what the link
    and the backend can do, against which each case's gradient all-reduce is set. Every rank calls it."""
    if world.size < 2:
        return None
    size = LINK_PROBE_BYTES["cuda" if world.device.type == "cuda" else "cpu"]
    flat = torch.ones(size // 4, dtype=torch.float32, device=world.device)
    return bus_bandwidth(size, allreduce_seconds(world, flat, calls), world.size)


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
    batches = -(-len(resident) // key.batch_size)
    clock = (lambda: CudaEventDataClock(batches)) if world.device.type == "cuda" else HostDataClock
    return EpochSource(lambda: resident.batches(key.batch_size), clock)


def slowest(per_rank: list[list[float]]) -> list[float]:
    """Unit by unit, the slowest rank's seconds: what all the ranks' samples took together."""
    return [max(values) for values in zip(*per_rank, strict=True)]


def placement(world: World, dataset: Dataset, key: CaseKey) -> Placement:
    """A case across processes: every rank trains its model (one DDP model together, or its own copy) on
    its shard (or all) of the resident data, each timed epoch starting after a barrier; rank 0 evaluates."""
    return Placement(
        device=world.device,
        build=lambda seed: training_for(world, key, seed),
        source=lambda seed: sharded_source(world, dataset, key, seed),
        before_epoch=world.barrier,
        evaluates=world.leader,
    )


class ParallelMeasure:
    """Measures one item across every rank; rank 0 gets what they measured together, the others None.

    Epochs and training runs are measured by the same code as one process's (`bench.measure.records`),
    placed on the ranks; each rank's seconds are gathered, and the slowest rank's set the total."""

    def __init__(self, world: World, dataset: Dataset, options: Options, min_round_s: float) -> None:
        self.world, self.dataset, self.options, self.min_round_s = world, dataset, options, min_round_s

    def measure(self, item: Item) -> tuple[Measured, dict[str, Any]] | None:
        """(what was measured, with samples per unit of all ranks together; case facts) on rank 0."""
        timing = workload(item.key.workload).timing
        if timing is Timing.ROUNDS:
            return self.rounds(item)
        place = placement(self.world, self.dataset, item.key)
        meter = EnergyMeter(None, "not measured across processes")
        if timing is Timing.EPOCHS:
            if item.key.loader != "resident":
                raise ValueError("epochs across processes use the resident loader (each rank its shard)")
            measured = measure_epochs(item, self.dataset, meter, place, first_pass=False)
        else:
            measured = measure_runs(item, self.dataset, meter, place, self.options.epochs, first_pass=False)
        comm = None
        if timing is Timing.EPOCHS and item.key.world_size > 1:
            comm = comm_seconds(self.world, training_for(self.world, item.key))
        return self._together(measured, comm)

    def _together(
        self, measured: Measured, comm: tuple[float, int] | None
    ) -> tuple[Measured, dict[str, Any]] | None:
        """Every rank's seconds gathered into rank 0's records: the slowest rank's set each unit's time."""
        per_rank = [self.world.gather(record.samples_s) for record in measured.records]
        samples = sum(self.world.gather(measured.samples_per_unit))
        if not self.world.leader:
            return None
        records = [
            replace(
                record,
                samples_s=slowest(ranks),
                per_rank_s=ranks,
                comm_s=comm[0] if comm else None,
                comm_bytes=comm[1] if comm else None,
            )
            for record, ranks in zip(measured.records, per_rank, strict=True)
        ]
        facts = {"backend": self.world.backend, "nnodes": self.world.nnodes}
        return Measured(records, samples), facts

    def rounds(self, item: Item) -> tuple[Measured, dict[str, Any]] | None:
        key, world = item.key, self.world
        monitor = MemoryMonitor(world.device)
        with monitor:
            training = training_for(world, key)
            inputs, labels = case_batch(
                training, self.dataset, key.batch_size, world.device, offset=world.rank * key.batch_size
            )
            step = STEPS[workload(key.workload).step or ""](training, inputs, labels)
            for _ in range(WARMUP_CALLS):  # a fixed count: a rank stopping early would leave the others
                step()  # waiting in an all-reduce
            synchronize(world.device)
            with Watch() as watch:  # this rank's threads; rank 0's record keeps its own
                per_call, calls = lockstep_rounds(
                    world,
                    step,
                    self.min_round_s,
                    self.options.max_time / self.options.passes,
                    self.options.min_rounds,
                )
            comm = comm_seconds(world, training) if key.world_size > 1 else None
        record = PassRecord(
            index=item.pass_index,
            samples_s=per_call,
            calls_per_round=calls,
            timer="lockstep rounds between barriers",
            min_round_s=self.min_round_s,
            memory=monitor.reading,
            contention=watch.record,
        )
        return self._together(Measured([record], key.batch_size), comm)


def profile_together(world: World, dataset: Dataset, key: CaseKey, folder: Path) -> list[str] | None:
    """Every rank profiles the same warm steps of a case across processes at once (the gradient
    all-reduce inside them), each writing its own trace and op table named with its rank, into the
    run folder (on its own node's disk under several nodes). Rank 0 gets every rank's files; a rank
    whose profile failed is named in the error rank 0 raises. Untimed: after the case's passes."""
    training = training_for(world, key)
    inputs, labels = case_batch(
        training, dataset, key.batch_size, world.device, offset=world.rank * key.batch_size
    )
    step = STEPS[workload(profiled_workload(key)).step or ""](training, inputs, labels)
    for _ in range(WARMUP_CALLS):
        step()
    synchronize(world.device)
    world.barrier()
    try:
        paths, error = profile_steps(step, world.device, folder, profile_name(key, world.rank)), None
    except Exception as failure:  # a write refused on one rank: the others' files still count
        paths, error = [], f"{type(failure).__name__}: {failure}"
    gathered = world.gather((paths, error))
    if not world.leader:
        return None
    failed = [f"rank {rank}: {error}" for rank, (_, error) in enumerate(gathered) if error]
    if failed:
        raise RuntimeError("profile not taken on " + "; ".join(failed))
    return [path for paths, _ in gathered for path in paths]


def wait_for_leader(world: World) -> None:
    """The other ranks while rank 0 measures a one-process case alone."""
    world.barrier(SOLO_TIMEOUT)
