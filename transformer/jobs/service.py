"""The jobs of this gateway process: store, files and runner, started and stopped with the app
(its lifespan), and the one place the API finds them."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from ..errors import GatewayError
from .config import JobSettings
from .files import FileStore, open_files
from .runner import Runner
from .store import JobStore, open_store, redacted
from .webhooks import Deliverer

logger = logging.getLogger("transformer.jobs")


@dataclass
class Jobs:
    settings: JobSettings
    store: JobStore
    files: FileStore  # or s3_files.S3FileStore: the same operations
    runner: Runner
    webhooks: Deliverer
    loop: asyncio.AbstractEventLoop
    draining: asyncio.Event  # set when the gateway stops: event streams end (clients resume)


_current: Jobs | None = None


def current() -> Jobs:
    if _current is None:
        raise GatewayError(
            503, "jobs are not available: the gateway is starting or stopping; retry later",
            {"Retry-After": "5"},
        )  # fmt: skip
    return _current


async def start(gateway: Callable[[], Any], settings: JobSettings | None = None) -> Jobs:
    global _current
    settings = settings or JobSettings.from_env()
    store = open_store(settings)
    await store.open()
    files = open_files(settings)
    await files.open()
    runner = Runner(settings, store, files, gateway)
    webhooks = Deliverer(settings, store)
    runner.on_finish = webhooks.wake
    await runner.start()
    await webhooks.start()
    loop = asyncio.get_running_loop()
    _current = Jobs(settings, store, files, runner, webhooks, loop, asyncio.Event())
    logger.info(
        "jobs: store %s, files %s, %d at a time",
        redacted(settings.store_url), files.description, settings.concurrency,
    )  # fmt: skip
    return _current


async def stop() -> None:
    global _current
    jobs, _current = _current, None
    if jobs is not None:
        jobs.draining.set()
        await jobs.runner.stop()
        await jobs.webhooks.stop()
        await jobs.store.close()


def drain() -> None:
    """The gateway is stopping (signal handler, any thread): end the event streams now rather
    than after the server's grace period; their clients reconnect with Last-Event-ID."""
    jobs = _current
    if jobs is not None:
        jobs.loop.call_soon_threadsafe(jobs.draining.set)


def _drain_on_signals() -> None:
    """Chain drain() before the handlers of SIGINT and SIGTERM in force while serving
    (uvicorn's: they start a graceful shutdown that waits for open responses, event streams
    included, up to the grace period; uvicorn puts the earlier handlers back when it ends)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Callable = previous) -> None:
            drain()
            previous(signum, frame)

        signal.signal(sig, handler)


def install(app: FastAPI, gateway: Callable[[], Any]) -> None:
    """Run the jobs for as long as the app runs; `gateway()` gives routes.State."""
    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
        async with previous(app_) as state:
            await start(gateway)
            _drain_on_signals()
            try:
                yield state
            finally:
                await stop()

    app.router.lifespan_context = lifespan
