"""Admission before the body: a request takes its place in its first task's queue when its
headers arrive, so that a full queue answers 429 before an upload streams in.

The queue (admission.py) counts the requests running at the predictor and those waiting for it.
Here the requests still uploading and decoding count too: a task holds at most its concurrency
plus MAX_QUEUE_PER_TASK requests in all, from their headers on; one more is answered 429 with
Retry-After at once, its body never read (a client that sent `Expect: 100-continue` never sends
it). So the uploads held in the gateway's memory at once are bounded by the queues, not by the
number of clients. A request's place here ends when its image is decoded and it joins the queue
itself (or fails).

The first task of /pipeline is known before the upload only with colorize=true (colorize), or
colorize=false and restore (restore); otherwise (colorize=auto decides on the photo, upscale on
its size) the queue decides after decoding, as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from .admission import Admission
from .errors import GatewayError


def first_task(op) -> str | None:
    """The task whose queue the operation joins first, when known before its image is."""
    options = getattr(op, "options", None)
    if options is None:
        return op.route
    if options.colorize is True:
        return "colorize"
    if options.colorize is False and options.restore:
        return "restore"
    return None  # colorize=auto decides on the photo; upscale on its size


def first_queue(settings, op) -> str | None:
    """The queue (a model's OIP name: `upscale`, `upscale-span-x4`) the operation joins first,
    when known before its image is."""
    task = first_task(op)
    if task is None:
        return None
    options = getattr(op, "options", None)
    model = options.models().get(task) if options is not None else getattr(op, "model", None)
    return settings.oip_name(task, model)


class Arrivals:
    """Requests past their headers and not yet in their task's queue, per task."""

    def __init__(self) -> None:
        self.uploading: Counter[str] = Counter()

    @contextmanager
    def place(self, admission: Admission, task: str | None) -> Iterator[None]:
        """A place in `task`'s queue from now until the block ends; 429 when there is none."""
        if task is None:
            yield
            return
        queue = admission.queue(task)
        held = queue.running + queue.waiting + self.uploading[task]
        if held >= queue.concurrency + queue.max_waiting:
            raise GatewayError(
                429,
                f"the {task} queue is full ({queue.running} running, {queue.waiting} waiting, "
                f"{self.uploading[task]} arriving; MAX_QUEUE_PER_TASK): the upload was not "
                "read; retry after the time in Retry-After",
                {"Retry-After": str(queue.retry_after())},
            )
        self.uploading[task] += 1
        try:
            yield
        finally:
            self.uploading[task] -= 1
