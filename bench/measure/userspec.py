"""The user's own model: `--models path/to/file.py:build` or `--models package.module:build`.

`build(batch_size)` returns a `bench.ModelSpec`, or the short form `(module, inputs, targets)`.
`check_user_model` tries a spec before anything is measured (imports it, builds it, runs its forward
and loss once on the CPU or where it put its tensors): every way it can be wrong is a UsageError
naming the spec and what was wrong (exit 2), never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.core.errors import UsageError, one_line
from bench.core.modelspec import ModelSpec

HINT = "see the README's Models section: build(batch_size) returns bench.ModelSpec(module, inputs, targets)"


def _refuse(name: str, problem: str) -> UsageError:
    return UsageError(f"--models {name}: {problem}", hint=HINT)


@cache
def user_builder(name: str) -> Callable[[int], Any]:
    """The function a spec names, its file or module imported once per process."""
    where, _, function = name.rpartition(":")
    if where.endswith(".py") or "/" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise _refuse(name, f"there is no file {path}")
        module_name = f"bench_user_model_{abs(hash(str(path.resolve())))}"
        loader = importlib.util.spec_from_file_location(module_name, path)
        if loader is None or loader.loader is None:
            raise _refuse(name, f"{path} cannot be imported as Python")
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module
        try:
            loader.loader.exec_module(module)
        except Exception as error:
            del sys.modules[module_name]
            raise _refuse(name, f"importing {path} raised {one_line(error, 300)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as error:
            raise _refuse(name, f"cannot import {where}: {one_line(error, 300)}") from None
    builder = getattr(module, function, None)
    if not callable(builder):
        raise _refuse(name, f"{where} has no function {function}")
    return builder


def default_loss(targets: torch.Tensor) -> Callable[[], Any]:
    """Cross-entropy for integer targets (class labels), mean squared error for float ones."""
    return nn.MSELoss if targets.is_floating_point() else nn.CrossEntropyLoss


def as_spec(name: str, built: Any) -> ModelSpec:
    """What `build` returned as a ModelSpec, the short form completed; anything else refused."""
    if isinstance(built, tuple) and len(built) == 3:
        built = ModelSpec(*built)
    if not isinstance(built, ModelSpec):
        raise _refuse(
            name,
            f"build returned a {type(built).__name__}, not a bench.ModelSpec or (module, inputs, targets)",
        )
    if not isinstance(built.module, nn.Module):
        raise _refuse(name, f"the module is a {type(built.module).__name__}, not a torch.nn.Module")
    for part in ("inputs", "targets"):
        value = getattr(built, part)
        if not isinstance(value, torch.Tensor):
            raise _refuse(name, f"the {part} are a {type(value).__name__}, not a torch.Tensor")
    if built.loss is None:
        built.loss = default_loss(built.targets)
    return built


def build_user_spec(name: str, batch_size: int) -> ModelSpec:
    """The spec `name` builds at `batch_size` (the caller seeds the generator)."""
    builder = user_builder(name)
    try:
        built = builder(batch_size)
    except UsageError:
        raise
    except Exception as error:
        raise _refuse(name, f"build({batch_size}) raised {one_line(error, 300)}") from None
    return as_spec(name, built)


def _devices(spec: ModelSpec) -> set[torch.device]:
    tensors = [*spec.module.parameters(), *spec.module.buffers()]
    return {t.device for t in tensors}


def check_user_model(name: str, batch_size: int) -> None:
    """Builds the spec and runs its forward and loss once, before anything is measured."""
    spec = build_user_spec(name, batch_size)
    module_devices = _devices(spec)
    for part in ("inputs", "targets"):
        device = getattr(spec, part).device
        if module_devices and device not in module_devices:
            shown = ", ".join(sorted(map(str, module_devices)))
            raise _refuse(name, f"the {part} are on {device} but the module's parameters on {shown}")
    if len(spec.inputs) != batch_size or len(spec.targets) != batch_size:
        raise _refuse(
            name,
            f"build({batch_size}) gave {len(spec.inputs)} inputs and {len(spec.targets)} targets; "
            f"the first dimension of both is the batch ({batch_size})",
        )
    try:
        outputs = spec.module(spec.inputs)
    except Exception as error:
        raise _refuse(name, f"its forward raised {one_line(error, 300)}") from None
    try:
        assert spec.loss is not None
        loss = spec.loss()(outputs, spec.targets)
        loss.backward()
    except Exception as error:
        raise _refuse(name, f"its loss on the forward's output raised {one_line(error, 300)}") from None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise _refuse(name, "its loss is not a single number (a tensor of one element)")
