"""Each request's time budget and the abandoned requests whose work is stopped.

A request's deadline is its arrival plus PREDICTOR_TIMEOUT_S (the Ingress gives up then too);
a job's is its start plus JOB_TIMEOUT_S (its own budget, jobs/runner.py).
Each gRPC call carries the time left as its gRPC deadline, so the predictor sees it; a step
whose deadline has passed before it starts is dropped without calling the predictor. When the
client hangs up, the request's work (a task) is cancelled, which cancels its gRPC call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from starlette.requests import Request

from .errors import GatewayError

T = TypeVar("T")


@dataclass
class Budget:
    timeout_s: float
    deadline: float  # time.monotonic()
    admitted: bool = False  # set once a step got past its queue: later steps wait, never 429
    setting: str = "PREDICTOR_TIMEOUT_S"  # where the timeout comes from, named in the 504
    holder: str = "request"  # the request, or a job

    @classmethod
    def starting_now(cls, timeout_s: float, **kwargs) -> Budget:
        return cls(timeout_s, time.monotonic() + timeout_s, **kwargs)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self, what: str) -> GatewayError:
        return GatewayError(
            504,
            f"the {self.holder} ran out of time ({self.timeout_s:g} s, {self.setting}) {what}; "
            "try again later, with a smaller image or a smaller tile_size",
        )

    async def bound(self, work: Awaitable[T], what: str) -> T:
        """`work`'s result; 504 when the budget runs out first (an upload still arriving at the
        deadline gives up its queue place then, not after the whole body)."""
        try:
            async with asyncio.timeout(self.check(what)):
                return await work
        except TimeoutError:
            raise self.expired(what) from None

    def check(self, what: str) -> float:
        """The seconds left; 504 when none are."""
        left = self.remaining()
        if left <= 0:
            raise self.expired(what)
        return left


# The budget of the request being served (None outside a request: bench and test callers).
current: ContextVar[Budget | None] = ContextVar("budget", default=None)


class ClientGone(Exception):
    """The client closed the connection: there is nobody to answer."""


async def _disconnected(request: Request) -> None:
    """Returns when the client hangs up (after the body was read, the next ASGI message)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result; when the client hangs up first, `work` is cancelled (with its gRPC
    call, which the predictor sees) and ClientGone is raised."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise ClientGone("while its work ran")
    return task.result()
