"""Where jobs are kept: the interface the runner and the API use, and `open_store`.

Small on purpose: sqlite.py (JOBS_STORE=sqlite:///PATH, one gateway replica) and
redis_store.py (JOBS_STORE=redis://..., several replicas) implement the same dozen operations.
Every state change goes through a conditional update (queued -> running by one claimer;
running -> finished only by the runner that owns it), so two runners never both finish a job and
a cancelled or deleted job is never brought back by a late runner.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from typing import Any
from urllib.parse import urlparse, urlunparse

from ..errors import GatewayError
from .config import JobSettings
from .model import Job

STORE_RETRY_S = 5  # Retry-After while the job store does not answer


def redacted(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    host = parsed.netloc.rsplit("@", 1)[1]
    user = f"{parsed.username}:***@" if parsed.username else ":***@"
    return urlunparse(parsed._replace(netloc=user + host))


class StoreUnavailable(GatewayError):
    """The job store does not answer (a Redis that is down or unreachable): 503 with
    Retry-After. Nothing was changed that the caller must undo; retrying later is safe."""

    def __init__(self, detail: str):
        super().__init__(503, f"{detail}; retry later", {"Retry-After": str(STORE_RETRY_S)})


class QueueFull(Exception):
    def __init__(self, queued: int):
        super().__init__(f"{queued} jobs queued")
        self.queued = queued


class JobStore(ABC):
    # Changes made by another process (another worker or replica) are seen within this long
    # by `wait`; changes made here wake it at once.
    POLL_S = 1.0

    def __init__(self) -> None:
        self._changed: dict[str, asyncio.Event] = {}

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def add(self, job: Job, max_queued: int) -> tuple[Job, bool]:
        """Store a new queued job: (job, True). When its idempotency key belongs to a live job:
        (that job, False). QueueFull when max_queued jobs are queued already."""

    @abstractmethod
    async def get(self, job_id: str) -> Job | None:
        """The job; None when unknown, deleted or expired."""

    @abstractmethod
    async def by_key(self, idempotency_key: str) -> Job | None: ...

    @abstractmethod
    async def claim(self, owner: str, lease_s: float) -> Job | None:
        """The oldest queued job, now running, owned by `owner` with a lease; None if none."""

    @abstractmethod
    async def set_progress(
        self, job_id: str, owner: str, done: int, total: int, stage: str
    ) -> bool:
        """False when the job is no longer running under `owner`."""

    @abstractmethod
    async def renew(self, owner: str, lease_s: float) -> set[str]:
        """Extend the leases of `owner`'s running jobs; the ids still running under it."""

    @abstractmethod
    async def finish(
        self,
        job_id: str,
        owner: str,
        status: str,
        ttl_s: float,
        *,
        progress: tuple[int, int, str],
        error: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
    ) -> Job | None:
        """running -> succeeded/failed when still owned by `owner`; None otherwise."""

    @abstractmethod
    async def cancel(self, job_id: str, ttl_s: float) -> Job | None:
        """queued/running -> canceled; the job as it is now (None when unknown)."""

    @abstractmethod
    async def release(self, job_id: str, owner: str) -> bool:
        """running -> queued: the gateway is stopping; the attempt does not count."""

    @abstractmethod
    async def recover(self, max_attempts: int, ttl_s: float) -> tuple[list[str], list[str]]:
        """Running jobs whose lease lapsed (their gateway died): queued again, or failed once
        they had max_attempts runs. Returns (requeued ids, failed ids)."""

    @abstractmethod
    async def expired(self) -> list[str]:
        """Finished jobs past their expiry."""

    @abstractmethod
    async def claim_webhook(self, now: float, hold_s: float) -> tuple[Job | None, float | None]:
        """The finished job whose pending webhook delivery is due first, held for hold_s (not
        claimed again meanwhile) with its attempt counted: (job, None). When none is due:
        (None, when the next pending one is due, or None)."""

    @abstractmethod
    async def set_webhook(self, job_id: str, state: str, next_at: float | None) -> None:
        """After an attempt: pending again at next_at, delivered, or failed (given up)."""

    @abstractmethod
    async def delete(self, job_id: str) -> bool: ...

    @abstractmethod
    async def ids(self) -> set[str]: ...

    @abstractmethod
    async def counts(self) -> dict[str, int]:
        """Live jobs by status."""

    def _notify(self, job_id: str) -> None:
        """Wake the `wait`s on this job (call on the event loop after a change)."""
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()

    async def wait(self, job_id: str, after_version: int, timeout: float) -> Job | None:
        """The job once its version is past `after_version`, or as it is after `timeout`;
        None when it is gone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = self._changed.setdefault(job_id, asyncio.Event())
            job = await self.get(job_id)
            left = deadline - loop.time()
            if job is None or job.version > after_version or left <= 0:
                return job
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(left, self.POLL_S))


def open_store(settings: JobSettings) -> JobStore:
    """The store JOBS_STORE names: sqlite:///PATH (one replica) or redis://... (several)."""
    if settings.store_path is None:
        from .redis_store import RedisJobStore

        return RedisJobStore(settings.store_url)
    from .sqlite import SqliteJobStore

    return SqliteJobStore(settings.store_path)
