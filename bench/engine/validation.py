"""Checks that a case computes what its reference computes, and what a resumed run already holds.

* loss: a mode's mean loss after the validation steps against eager's, from the same seed and
  batches (done once per device, mode and batch size);
* accuracy: training that runs differently must end within 1 point of the plain run's final
  accuracy: a mode against eager at the same batch size; N data-parallel ranks at batch B against
  one process at batch N·B (DDP averages the gradients of N·B samples, the chapter's learning rate
  unscaled).

A failed check makes an ok case `invalid` (`CaseResult.with_validation`), never a number in the tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from bench.core.catalog import Status, Timing, workload
from bench.core.keys import CaseKey
from bench.core.plan import Item, solo_device
from bench.core.records import Validation
from bench.core.results import CaseResult, Run
from bench.measure import modes
from bench.measure.data import Dataset

ACCURACY_TOLERANCE = 0.01  # a mode's final test accuracy within 1 point of eager's


def item_recorded(case: CaseResult, item: Item) -> bool:
    """Whether `case` already holds what `item` measures (a resumed run skips it)."""
    if workload(case.key.workload).timing is Timing.RUNS:
        return all(
            any(r.index == i for r in case.passes) for i in range(item.first, item.first + item.repeats)
        )
    return any(r.index == item.pass_index for r in case.passes)


class LossChecks:
    """Each mode's loss check against eager, done once per model, device, mode and batch size."""

    def __init__(self, dataset: Dataset, note: Callable[[str], None]) -> None:
        self.dataset, self.note = dataset, note
        self.done: dict[tuple[str, str, str, int], Validation] = {}

    def of(self, key: CaseKey) -> Validation | None:
        """The check of `key`'s mode (None for eager)."""
        if key.mode == "eager":
            return None
        where = (key.model, key.device, key.mode, key.batch_size)
        if where not in self.done:
            self.note(f"validating {key.mode} against eager ({modes.validation_steps(key.model)} steps) ...")
            check = modes.validate_loss(key.mode, key.device, self.dataset, key.batch_size, model=key.model)
            self.done[where] = Validation(
                "loss",
                check.loss,
                check.eager_loss,
                check.tolerance,
                check.passed,
                check.steps,
                scale=check.scale,
            )
        return self.done[where]


def validate_training(run: Run) -> None:
    """Every training case that runs differently, checked against its plain reference of the same run."""
    for case in list(run.cases):
        plain = case.key.mode == "eager" and case.key.world_size == 1
        trains = workload(case.key.workload).timing is Timing.RUNS
        if not trains or plain or case.status not in (Status.OK, Status.INVALID):
            continue
        if case.key.world_size > 1:  # N ranks at batch B take the step of one process at batch N·B
            reference_key = replace(
                case.key,
                device=solo_device(case.key.device),
                batch_size=case.key.batch_size * case.key.world_size,
                world_size=1,
            )
            against = f"one process at batch {reference_key.batch_size}"
        else:
            reference_key, against = replace(case.key, mode="eager"), "eager"
        reference = run.case(reference_key)
        if reference is None or reference.final_accuracy is None or case.final_accuracy is None:
            continue
        passed = abs(case.final_accuracy - reference.final_accuracy) <= ACCURACY_TOLERANCE
        check = Validation(
            "accuracy",
            case.final_accuracy,
            reference.final_accuracy,
            ACCURACY_TOLERANCE,
            passed,
            against=against,
        )
        run.store(case.with_validation(check))
