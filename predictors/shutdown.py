"""SIGTERM (and SIGINT): stop taking requests, let the current work finish within a grace period,
cancel what is left, then let KServe stop its servers.

Left alone, uvicorn takes the signal, closes the HTTP port and waits for REST requests only, while
gRPC keeps taking new requests; KServe then gives gRPC a second grace period of its own. Here the
model turns not ready at once (readiness answers 503 "shutting down", new requests get
UNAVAILABLE), running and queued work gets `grace` seconds, then is cancelled between tiles or
faces (cancel.py), and only then is the signal handed to uvicorn's handler, which ends the
process through KServe's own stop. The handler is installed at the app's startup, after uvicorn
installed its own, which it keeps to call at the end.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from fastapi import FastAPI

from . import cancel
from .base import EnhanceModel

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Time for the cancelled work to reach its next tile or face before the servers stop anyway.
CANCEL_SETTLE_SECONDS = 5.0


class GracefulShutdown:
    def __init__(self, models: list[EnhanceModel], grace: float):
        self.models = models
        self.task = models[0].task
        self.grace = grace
        self._draining = False
        self._uvicorn_handlers: dict[signal.Signals, Callable] = {}

    def install(self, app: FastAPI) -> None:
        app.router.on_startup.append(self._take_signals)

    async def _take_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            handler = signal.getsignal(sig)  # uvicorn's, installed while it serves
            if callable(handler):
                self._uvicorn_handlers[sig] = handler
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._draining:  # a second signal: stop waiting
            cancel.cancel_all("the server is shutting down")
            return
        self._draining = True
        asyncio.get_running_loop().create_task(self._drain(sig))

    async def _drain(self, sig: signal.Signals) -> None:
        for model in self.models:
            model.ready = False
            model.load_error = "shutting down"
        log.info(
            "%s: %s: not ready; %d request(s) get up to %.0f s to finish",
            self.task,
            signal.Signals(sig).name,
            cancel.busy(),
            self.grace,
        )
        if not await _until_idle(self.grace):
            stopped = cancel.cancel_all("the server is shutting down")
            log.warning("%s: grace period over; cancelled %d request(s)", self.task, stopped)
            await _until_idle(CANCEL_SETTLE_SECONDS)
        loop = asyncio.get_running_loop()
        for other, handler in self._uvicorn_handlers.items():
            loop.remove_signal_handler(other)
            signal.signal(other, handler)
        self._uvicorn_handlers[sig](sig, None)


async def _until_idle(seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while cancel.busy() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return not cancel.busy()
