"""Who listens to a request's progress: the job that runs it (jobs report progress, synchronous
requests do not).

A job sets `current` to its listener before it runs a route's work; each predictor call made
meanwhile (predictors.py) then asks the predictor for progress (V2 ModelStreamInfer, CONTRACT
section 6) and passes every report on as listener(task, done, total, stage). Without a listener
a call stays a plain unary ModelInfer.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

# (task, done, total, stage): one predictor call's progress, 0 <= done <= total, total >= 1.
Listener = Callable[[str, int, int, str], None]

current: ContextVar[Listener | None] = ContextVar("progress_listener", default=None)
