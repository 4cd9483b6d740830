"""Stopping a request's work once nobody waits for its answer.

A gRPC call that its client cancels, or whose deadline passes, ends on the server as a cancelled
asyncio task (grpc.aio cancels the handler's task; KServe's servicer passes no call context to
the model). `predict` turns that into a `CancelToken` that the inference thread reads between
tiles, faces and images (`should_stop`), so the next request waits for one tile at most. A
request still queued when its call ends is never started.

The token travels in a context variable, so the models' `enhance` signatures stay as they are;
so does a streamed request's progress reporter (progress.py), which goes along with the token.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException

from . import progress

T = TypeVar("T")

log = logging.getLogger(__name__)


class Cancelled(GrpcException):
    """The request's work stopped: its call ended, or the server is shutting down.

    Whoever still waits (only in a shutdown) gets gRPC UNAVAILABLE (REST: 503): retry elsewhere.
    """

    status_code = StatusCode.UNAVAILABLE


class CancelToken:
    """One request's "stop now" flag, set from the event loop and read by the inference thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.started = False
        self.checks = 0  # how many times the work looked (tiles, faces, images)

    def cancel(self, reason: str = "the call was cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def should_stop(self) -> bool:
        self.checks += 1
        return self._event.is_set()


_active: set[CancelToken] = set()  # requests in the inference thread or queued for it
_current: contextvars.ContextVar[CancelToken | None] = contextvars.ContextVar(
    "cancel_token", default=None
)


def should_stop() -> bool:
    """True when the current request's call has ended; False outside a request."""
    token = _current.get()
    return token is not None and token.should_stop()


def check() -> None:
    """Raise `Cancelled` when the current request's call has ended."""
    if should_stop():
        raise Cancelled(_current.get().reason)


def run_with(
    token: CancelToken, work: Callable[..., T], *args, reporter: progress.Reporter | None = None
) -> T:
    """Run `work(*args)` (in an executor thread) with `token` as the current request's token
    and `reporter` as its progress reporter."""

    def call() -> T:
        token.started = True
        _current.set(token)
        progress.current.set(reporter)
        check()  # its call ended while it waited in the queue: drop it
        try:
            return work(*args)
        except Cancelled:
            log.info("stopped after %d step(s): %s", token.checks, token.reason)
            raise

    return contextvars.Context().run(call)


async def run_in_thread(executor: Executor, task: str, work: Callable[..., T], *args) -> T:
    """`work(*args)` in `executor`, told to stop when the awaiting call is cancelled, reporting
    its progress to the awaiting call's reporter (if it streams)."""
    token = CancelToken()
    job = functools.partial(run_with, token, work, *args, reporter=progress.current.get())
    future = asyncio.get_running_loop().run_in_executor(executor, job)
    _active.add(token)
    log.debug("%s: accepted; %d request(s) running or queued", task, len(_active))
    try:
        return await future
    except asyncio.CancelledError:
        token.cancel()
        if token.started:
            log.info("%s: the call ended before its answer; stopping its work", task)
        else:
            log.info("%s: the call ended while queued; dropped before it started", task)
        raise
    finally:
        _active.discard(token)


def busy() -> int:
    """How many requests are running or queued."""
    return len(_active)


def cancel_all(reason: str) -> int:
    """Tell every running or queued request to stop; returns how many there were."""
    tokens = list(_active)
    for token in tokens:
        token.cancel(reason)
    return len(tokens)
