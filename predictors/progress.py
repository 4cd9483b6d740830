"""A request's progress, reported by the inference thread as tiles, tile batches and faces finish.

ModelStreamInfer (v2grpc.py) sets a `Reporter` as the request's `current` reporter; cancel.py
carries it into the inference thread with the request's cancel token; the tiler and the face loop
call `tiles` / `report` (nothing happens outside a streamed request). The reporter hands each
report to the event loop with `loop.call_soon_threadsafe`, at most one per `interval` seconds
plus the one that completes the work.

What a client sees is one request's progress: `done` never goes backwards, `0 <= done <= total`,
and `total` is the same in every report of the request (the first report's). The work's own counts
are mapped onto it by the fraction done, which only moves forward: a batch of N images counts each
image as 1/N of the whole; a restart of the work (a CUDA out-of-memory retry with smaller tiles,
a half-precision answer computed again in fp32) is not reported until it passes the point already
reported. The stage text says the work's own counts ("upscale: tile 12 of 48").
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

INTERVAL_S = 0.1  # at most ~10 progress messages a second, plus the last


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    stage: str


class Reporter:
    """One request's progress. `step` and `image` are called in the inference thread; `send`
    runs on `loop`; `close` (on the loop, once the work ended) gives the report still held back
    by the rate limit, if any, and drops any later one."""

    def __init__(
        self,
        task: str,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[Progress], None],
        interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.task, self._loop, self._send = task, loop, send
        self._interval, self._clock = interval, clock
        self._lock = threading.Lock()
        self._image, self._images = 0, 1
        self._total: int | None = None  # fixed by the first report
        self._done = 0
        self._sent_at = float("-inf")
        self._held: Progress | None = None  # accepted, not sent yet (rate limit)
        self._closed = False

    def image(self, index: int, count: int) -> None:
        """The work moves to image `index` (from 0) of a batch of `count`."""
        with self._lock:
            self._image, self._images = index, max(1, count)

    def step(self, done: int, total: int, what: str) -> None:
        """The work has finished `done` of its `total` `what`s (tiles, faces) of this image."""
        if total < 1:
            return
        done = min(max(done, 0), total)
        with self._lock:
            if self._closed:
                return
            share = (self._image + done / total) / self._images  # of the whole request
            if self._total is None:
                self._total = total * self._images
            overall = min(self._total, int(share * self._total + 1e-9))
            if overall < self._done:
                return  # a restart, behind what was already reported
            self._done = overall
            stage = f"{what} {done} of {total}"
            if self._images > 1:
                stage = f"image {self._image + 1} of {self._images}, {stage}"
            stage = f"{self.task}: {stage}"
            progress = Progress(overall, self._total, stage)
            now = self._clock()
            if overall < self._total and now - self._sent_at < self._interval:
                self._held = progress
                return
            self._held, self._sent_at = None, now
        self._loop.call_soon_threadsafe(self._deliver, progress)

    def _deliver(self, progress: Progress) -> None:
        if not self._closed:
            self._send(progress)

    def close(self) -> Progress | None:
        """No more reports; returns the last accepted one if the rate limit still holds it."""
        with self._lock:
            self._closed = True
            held, self._held = self._held, None
        return held


current: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar(
    "progress_reporter", default=None
)


def report(done: int, total: int, what: str) -> None:
    """The current request's work finished `done` of `total` `what`s (no-op outside a stream)."""
    reporter = current.get()
    if reporter is not None:
        reporter.step(done, total, what)


def tiles(done: int, total: int) -> None:
    """The tiler's callback (tiling.run_tiles `on_progress`)."""
    report(done, total, "tile")


def image(index: int, count: int) -> None:
    reporter = current.get()
    if reporter is not None:
        reporter.image(index, count)
