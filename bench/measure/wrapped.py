"""The training objects of the modes that run a model another way than eager: autocast to bfloat16,
`torch.compile` of each call, and a CUDA graph per call and batch shape (see `bench.measure.modes`).

Each offers what a workload calls (`forward`, `forward_backward`, `step`) and the attributes the
measuring reads (`net`, `device`, `optimizer`, `example`, `model`, `compile_s`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from bench.measure.devices import side_stream, synchronize
from bench.measure.model import Training, preserved


class AutocastTraining(Training):
    """The forward and the loss under `torch.autocast` to bfloat16; backward and update as usual."""

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return super().forward(inputs)

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return super().loss(inputs, labels)


class CompiledTraining:
    """A model's training compiled with `torch.compile`; the first call of each shape is the compile."""

    def __init__(self, base: Training) -> None:
        # Dynamo keeps its compiled code per code object, and every Training's `step` shares one: after
        # 8 instances (its recompile limit) it would run the 9th in eager without a word, and "compile"
        # would time eager. Each instance starts from empty in-memory caches (the on-disk caches keep a
        # recompile short), and a limit hit all the same is an error, never a silent fallback.
        torch._dynamo.reset()
        if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"):  # torch 2.6 and newer
            torch._dynamo.config.fail_on_recompile_limit_hit = True
        self.base = base
        self.net, self.device, self.optimizer = base.net, base.device, base.optimizer
        self.example, self.model = base.example, base.model
        self.compile_s = 0.0
        self._compiled: dict[str, Callable[..., torch.Tensor]] = {
            "forward": torch.compile(base.forward),
            "forward_backward": torch.compile(base.forward_backward),
            "step": torch.compile(base.step),
        }
        self._seen: set[tuple[Any, ...]] = set()

    def _call(self, name: str, *tensors: torch.Tensor) -> torch.Tensor:
        shape = (name, torch.is_grad_enabled(), *(tuple(t.shape) for t in tensors))
        if shape in self._seen:
            return self._compiled[name](*tensors)
        start = time.perf_counter()
        result = self._compiled[name](*tensors)
        synchronize(self.device)
        self.compile_s += time.perf_counter() - start
        self._seen.add(shape)
        return result

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._call("forward", inputs)

    def forward_backward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._call("forward_backward", inputs, labels)

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._call("step", inputs, labels)


class GraphedTraining:
    """Each call captured once per batch shape as a CUDA graph on static buffers, then replayed.

    Capture follows PyTorch's whole-network recipe: warm-up iterations on a side stream (their
    effect on the weights undone), gradients set to none, then the step (loss, backward, SGD
    update) recorded; replay writes fresh gradients and updates the weights in place.
    """

    WARMUP = 3

    def __init__(self, base: Training) -> None:
        self.base = base
        self.net, self.device, self.optimizer = base.net, base.device, base.optimizer
        self.example, self.model = base.example, base.model
        self.compile_s = 0.0  # capture time, reported like compilation
        self._graphs: dict[
            tuple[Any, ...], tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]
        ] = {}

    def _replay(self, name: str, body: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
        key = (name, torch.is_grad_enabled(), *(tuple(t.shape) for t in tensors))
        entry = self._graphs.get(key)
        if entry is None:
            start = time.perf_counter()
            entry = self._graphs[key] = self._capture(body, tensors)
            self.compile_s += time.perf_counter() - start
        graph, static, output = entry
        for buffer, tensor in zip(static, tensors, strict=True):
            buffer.copy_(tensor, non_blocking=True)
        graph.replay()
        return output

    def _capture(
        self, body: Callable[..., torch.Tensor], tensors: tuple[torch.Tensor, ...]
    ) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]:
        static = [t.detach().clone() for t in tensors]
        with preserved(self.base):
            side = side_stream(self.device)  # one per device: a new one costs a cuBLAS workspace
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP):
                    self.base.optimizer.zero_grad(set_to_none=True)
                    body(*static)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.base.optimizer.zero_grad(set_to_none=True)  # the captured backward writes fresh gradients
            with torch.cuda.graph(graph):
                output = body(*static)
        synchronize(self.device)
        return graph, static, output

    def _update(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.base.loss(inputs, labels)
        loss.backward()
        self.base.optimizer.step()
        return loss

    def _gradients(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.base.loss(inputs, labels)
        loss.backward()
        return loss

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._replay("forward", self.base.forward, inputs)

    def forward_backward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._replay("forward_backward", self._gradients, inputs, labels)

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._replay("step", self._update, inputs, labels)
