"""A bounded queue per task in front of its predictor (load shedding).

At most `concurrency` requests of a task are at its predictors at once: MAX_INFLIGHT_PER_REPLICA
times the replicas that are up (predictors.py sets it as replicas come and go), at most
MAX_INFLIGHT_PER_TASK when that is set; at most MAX_QUEUE_PER_TASK more wait here, in arrival
order. One more is answered 429 with a Retry-After estimated from the recent time per call and
the replicas up. A waiting request whose deadline passes leaves the
queue with 504 without reaching the predictor; one whose client hangs up simply leaves.
A request past its first step (a pipeline) is never refused: its later steps wait their turn.

Jobs (jobs/runner.py) call the predictors in the background (`background` set): a freed slot goes
to a waiting synchronous request first, and only when none waits to a job. Jobs wait in the job
store, not here: the runner runs a bounded number at a time, so few of their calls ever wait in
this queue, and they never count against MAX_QUEUE_PER_TASK (no 429 for jobs). A job's call that
is already at the predictor is not interrupted: a synchronous request waits for it at most.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

from . import metrics
from .budget import Budget
from .errors import GatewayError

# Set by the job runner: this context's predictor calls yield to synchronous requests.
background: ContextVar[bool] = ContextVar("admission_background", default=False)


class TaskQueue:
    SMOOTHING = 0.3  # weight of the newest call in the moving average of seconds per call

    def __init__(self, task: str, concurrency: int, max_waiting: int):
        self.task = task
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.waiting = 0  # synchronous requests waiting (MAX_QUEUE_PER_TASK)
        self.waiting_background = 0  # job calls waiting (bounded by the job runner)
        self.running = 0
        self.seconds_per_call = 1.0
        self._held = 0  # slots given out: running, or handed to a waiter that is waking up
        # Waiters by priority: synchronous requests first, then background (job) calls.
        self._waiters: dict[bool, deque[asyncio.Future]] = {False: deque(), True: deque()}

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

    def set_concurrency(self, concurrency: int) -> None:
        """A new number of calls at once (replicas came or went); waiters get any new room."""
        self.concurrency = max(1, concurrency)
        self._wake()

    async def _acquire(self, low: bool) -> None:
        """A slot; a freed one is handed to the first synchronous waiter, else the first
        background one (a waiter is woken holding it)."""
        if self._held < self.concurrency:  # then nobody waits: room goes to waiters first
            self._held += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[low].append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot while being cancelled: pass it on
            else:
                self._waiters[low].remove(waiter)
            raise

    def _release(self) -> None:
        self._held -= 1
        self._wake()

    def _wake(self) -> None:
        """Hand the room there is to waiters, synchronous ones first."""
        for waiters in (self._waiters[False], self._waiters[True]):
            while waiters and self._held < self.concurrency:
                waiter = waiters.popleft()
                if not waiter.done():
                    self._held += 1
                    waiter.set_result(None)

    def _report(self) -> None:
        metrics.QUEUE_DEPTH.labels(self.task).set(self.waiting + self.waiting_background)
        metrics.INFLIGHT.labels(self.task).set(self.running)

    @asynccontextmanager
    async def slot(self, budget: Budget | None) -> AsyncIterator[None]:
        low = background.get()
        busy = self.running >= self.concurrency or self.waiting > 0
        admitted = budget is not None and budget.admitted
        if not low and busy and self.waiting >= self.max_waiting and not admitted:
            raise self._full()
        if low:
            self.waiting_background += 1
        else:
            self.waiting += 1
        self._report()
        try:
            if budget is None:
                await self._acquire(low)
            else:
                left = budget.check(f"before the {self.task} step started")
                try:
                    async with asyncio.timeout(left):
                        await self._acquire(low)
                except TimeoutError:
                    raise budget.expired(f"waiting in the {self.task} queue") from None
                budget.admitted = True
        finally:
            if low:
                self.waiting_background -= 1
            else:
                self.waiting -= 1
            self._report()
        self.running += 1
        self._report()
        start = time.monotonic()
        try:
            yield
        finally:
            self.running -= 1
            self._release()
            self._report()
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
