"""The admission queue's two priorities: a freed slot goes to a waiting synchronous request
before any waiting job call (admission.background), jobs never get 429, and a waiter that gives
up (cancelled, out of time) leaves no slot behind."""

from __future__ import annotations

import asyncio

import pytest

from transformer import admission
from transformer.admission import TaskQueue
from transformer.budget import Budget
from transformer.errors import GatewayError


async def _take(queue: TaskQueue, name: str, order: list[str], hold: asyncio.Event, low: bool):
    admission.background.set(low)
    async with queue.slot(None):
        order.append(name)
        await hold.wait()


def test_a_freed_slot_goes_to_a_synchronous_request_before_earlier_jobs():
    async def scenario() -> list[str]:
        queue = TaskQueue("upscale", concurrency=1, max_waiting=8)
        order: list[str] = []
        hold = asyncio.Event()
        first = asyncio.create_task(_take(queue, "job-1", order, hold, low=True))
        await asyncio.sleep(0)
        later = [asyncio.create_task(_take(queue, f"job-{i}", order, hold, True)) for i in (2, 3)]
        await asyncio.sleep(0)
        sync = asyncio.create_task(_take(queue, "sync", order, hold, low=False))
        await asyncio.sleep(0)
        assert (queue.running, queue.waiting, queue.waiting_background) == (1, 1, 2)
        hold.set()
        await asyncio.gather(first, *later, sync)
        return order

    assert asyncio.run(scenario()) == ["job-1", "sync", "job-2", "job-3"]


def test_jobs_are_never_refused_and_synchronous_requests_are_when_full():
    async def scenario() -> None:
        queue = TaskQueue("restore", concurrency=1, max_waiting=1)
        hold = asyncio.Event()
        order: list[str] = []
        tasks = [asyncio.create_task(_take(queue, "sync-1", order, hold, False))]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(_take(queue, f"job-{i}", order, hold, True)) for i in (1, 2)]
        tasks.append(asyncio.create_task(_take(queue, "sync-2", order, hold, False)))
        await asyncio.sleep(0)
        admission.background.set(False)
        with pytest.raises(GatewayError) as refused:
            async with queue.slot(None):
                pass
        assert refused.value.status == 429
        hold.set()
        await asyncio.gather(*tasks)
        assert order == ["sync-1", "sync-2", "job-1", "job-2"]

    asyncio.run(scenario())


def test_a_waiter_that_gives_up_leaves_the_slot_to_the_next():
    async def scenario() -> None:
        queue = TaskQueue("restore", concurrency=1, max_waiting=8)
        hold = asyncio.Event()
        order: list[str] = []
        holder = asyncio.create_task(_take(queue, "first", order, hold, False))
        await asyncio.sleep(0)
        cancelled = asyncio.create_task(_take(queue, "cancelled", order, hold, True))
        await asyncio.sleep(0)
        admission.background.set(True)
        with pytest.raises(GatewayError) as late:
            async with queue.slot(Budget.starting_now(0.01, setting="JOB_TIMEOUT_S")):
                pass
        assert late.value.status == 504 and "JOB_TIMEOUT_S" in late.value.detail
        cancelled.cancel()
        last = asyncio.create_task(_take(queue, "last", order, hold, True))
        await asyncio.sleep(0)
        hold.set()
        await asyncio.gather(holder, last, cancelled, return_exceptions=True)
        assert order == ["first", "last"]
        assert (queue.running, queue.waiting, queue.waiting_background) == (0, 0, 0)
        assert queue._held == 0

    asyncio.run(scenario())


def test_replicas_coming_and_going_change_the_calls_at_once_and_retry_after():
    """CONTRACT section 8: the queue admits MAX_INFLIGHT_PER_REPLICA per replica up
    (predictors.py sets it); a replica that comes up lets waiters in at once, one that goes
    admits no more until the calls at it end; Retry-After counts the replicas up."""

    async def scenario() -> None:
        queue = TaskQueue("restore", concurrency=1, max_waiting=8)
        queue.seconds_per_call = 10.0
        hold = asyncio.Event()
        order: list[str] = []
        tasks = [asyncio.create_task(_take(queue, f"r{i}", order, hold, False)) for i in range(4)]
        await asyncio.sleep(0)
        assert (queue.running, queue.waiting) == (1, 3)
        assert queue.retry_after() == 40  # (1 running + 3 waiting) calls / 1 replica x 10 s
        queue.set_concurrency(3)  # two more replicas up
        await asyncio.sleep(0)
        assert (queue.running, queue.waiting) == (3, 1)
        assert queue.retry_after() == 14  # 4 calls / 3 replicas x 10 s, rounded up
        queue.set_concurrency(1)  # two went down: the running calls go on, nobody else starts
        await asyncio.sleep(0)
        assert (queue.running, queue.waiting) == (3, 1)
        hold.set()
        await asyncio.gather(*tasks)
        assert order == ["r0", "r1", "r2", "r3"]
        assert (queue.running, queue.waiting, queue._held) == (0, 0, 0)

    asyncio.run(scenario())
