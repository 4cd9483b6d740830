"""A bounded queue per task in front of its predictor (load shedding).

At most MAX_INFLIGHT_PER_TASK requests of a task are at its predictor at once; at most
MAX_QUEUE_PER_TASK more wait here, in arrival order. One more is answered 429 with a Retry-After
estimated from the recent time per call. A waiting request whose deadline passes leaves the
queue with 504 without reaching the predictor; one whose client hangs up simply leaves.
A request past its first step (a pipeline) is never refused: its later steps wait their turn.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .budget import Budget
from .errors import GatewayError


class TaskQueue:
    SMOOTHING = 0.3  # weight of the newest call in the moving average of seconds per call

    def __init__(self, task: str, concurrency: int, max_waiting: int):
        self.task = task
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.waiting = 0
        self.running = 0
        self.seconds_per_call = 1.0
        self._slots = asyncio.Semaphore(concurrency)

    def retry_after(self) -> int:
        """Seconds until the queue has likely moved by one place per waiting request."""
        rounds = (self.waiting + self.running) / self.concurrency
        return max(1, math.ceil(rounds * self.seconds_per_call))

    def _full(self) -> GatewayError:
        return GatewayError(
            429,
            f"the {self.task} queue is full ({self.running} running, {self.waiting} waiting, "
            "MAX_QUEUE_PER_TASK); retry after the time in Retry-After",
            {"Retry-After": str(self.retry_after())},
        )

    @asynccontextmanager
    async def slot(self, budget: Budget | None) -> AsyncIterator[None]:
        busy = self.running >= self.concurrency or self.waiting > 0
        if busy and self.waiting >= self.max_waiting and not (budget and budget.admitted):
            raise self._full()
        self.waiting += 1
        try:
            if budget is None:
                await self._slots.acquire()
            else:
                left = budget.check(f"before the {self.task} step started")
                try:
                    async with asyncio.timeout(left):
                        await self._slots.acquire()
                except TimeoutError:
                    raise budget.expired(f"waiting in the {self.task} queue") from None
                budget.admitted = True
        finally:
            self.waiting -= 1
        self.running += 1
        start = time.monotonic()
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            took = time.monotonic() - start
            self.seconds_per_call += self.SMOOTHING * (took - self.seconds_per_call)


class Admission:
    def __init__(self, concurrency: int, max_waiting: int):
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self._queues: dict[str, TaskQueue] = {}

    def queue(self, task: str) -> TaskQueue:
        if task not in self._queues:
            self._queues[task] = TaskQueue(task, self.concurrency, self.max_waiting)
        return self._queues[task]
