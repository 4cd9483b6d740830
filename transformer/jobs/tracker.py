"""A running job's progress {done, total, stage} from its predictor calls.

Every job that runs has total = SCALE: done/total is the share of the whole work done. A job's
steps are the predictor tasks its operation calls, in order (operations.Operation.steps); each
step is an equal share, so /pipeline's bar covers all its steps and never restarts at 0 for the
next one. Within a step the predictor's own reports (progress.current: tiles, faces) move it;
`StepReports` also reports each call's start and end, so a predictor that reports nothing still
moves the bar step by step. `done` never goes backwards, also when a job is run again after a
gateway restart (it stays where the earlier run got to until the new run passes it).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import progress
from ..predictors import Answer, Predictors

SCALE = 1000


class Tracker:
    def __init__(self, steps: list[str], done: int, on_change: Callable[[int, int, str], None]):
        self.steps = steps
        self.index = 0
        self.done = min(max(done, 0), SCALE)
        self.stage = "starting"
        self.on_change = on_change

    def _step_of(self, task: str) -> int | None:
        for index in range(self.index, len(self.steps)):
            if self.steps[index] == task:
                return index
        return None

    def listener(self, task: str, done: int, total: int, stage: str) -> None:
        """progress.Listener: one predictor call's report."""
        index = self._step_of(task)
        if index is None:  # a call outside the plan: its stage only
            index, share = self.index, 0.0
        else:
            share = min(max(done, 0), max(total, 1)) / max(total, 1)
        self.index = index
        count = max(len(self.steps), 1)
        value = int((index + share) / count * SCALE)
        self.done = max(self.done, min(value, SCALE))
        text = stage if stage.startswith(task) else f"{task}: {stage}"
        if count > 1:
            text = f"{text} (step {index + 1} of {count})"
        self.stage = text
        self.on_change(self.done, SCALE, self.stage)

    def set_stage(self, stage: str) -> None:
        self.stage = stage
        self.on_change(self.done, SCALE, stage)


class StepReports:
    """The predictors as a job's operation sees them: every call also reports its start and its
    end to the job's listener (progress.current); anything else is the predictors' own.

    The answers of a run's calls are kept until the run ends: when the operation is tried again
    (runner: a predictor unavailable for now), `again()` makes the calls it already made answer
    from what was kept, so the steps before the one that failed are not run twice. A call is
    the same when its task, parameters and input image (hashed, in a thread) are."""

    def __init__(self, predictors: Predictors):
        self._predictors = predictors
        self._answers: list[tuple[tuple, Answer]] = []  # in the order the operation called them
        self._calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictors, name)

    def again(self) -> None:
        """The operation starts over: its calls replay the kept answers while they match."""
        self._calls = 0

    @property
    def replayed(self) -> int:
        return min(self._calls, len(self._answers))

    async def infer(
        self,
        task: str,
        image: np.ndarray,
        parameters: dict[str, Any],
        model: str | None = None,
    ) -> Answer:
        listener = progress.current.get()
        if listener is not None:
            listener(task, 0, 1, "started")
        key = (task, model, repr(sorted(parameters.items())), image.shape, await _digest(image))
        index, self._calls = self._calls, self._calls + 1
        if index < len(self._answers) and self._answers[index][0] == key:
            answer = self._answers[index][1]
        else:
            del self._answers[index:]  # the operation went another way: nothing after is valid
            answer = await self._predictors.infer(task, image, parameters, model)
            self._answers.append((key, answer))
        if listener is not None:
            listener(task, 1, 1, "done")
        return answer


async def _digest(image: np.ndarray) -> bytes:
    def digest() -> bytes:
        return hashlib.blake2b(memoryview(np.ascontiguousarray(image)).cast("B")).digest()

    return await asyncio.to_thread(digest)
