"""The job record and its JSON (CONTRACT section 6)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "canceled",
)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED)
FINISHED = frozenset((SUCCEEDED, FAILED, CANCELED))
PREFIX = "/v1/jobs"
# A job's webhook delivery (webhooks.py): pending from the update that ends the job.
WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED = "pending", "delivered", "failed"


def rfc3339(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Job:
    id: str
    task: str  # the route: colorize, restore, face-restore, upscale, pipeline
    params: dict[str, Any]  # the operation's parameters (operations.from_params)
    status: str = QUEUED
    done: int = 0
    total: int = 1
    stage: str = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: dict[str, Any] | None = None  # {status, detail}: what the synchronous route answered
    version: int = 1  # +1 on every change: the events' ids
    attempts: int = 0  # runs started (a gateway that died mid-run cost one)
    owner: str | None = None  # the runner running it
    lease_until: float | None = None  # its owner renews this while it runs
    expires_at: float | None = None  # finished_at + JOB_TTL_S
    idempotency_key: str | None = None
    result: dict[str, Any] | None = None  # {media_type, headers} of the stored answer
    webhook: str | None = None  # URL to POST the job to when it ends (webhooks.py)
    webhook_state: str | None = None  # pending (set as it ends), delivered, failed
    webhook_attempts: int = 0
    webhook_next_at: float | None = None  # when a pending delivery is due

    @classmethod
    def new(
        cls,
        task: str,
        params: dict[str, Any],
        idempotency_key: str | None = None,
        webhook: str | None = None,
    ) -> Job:
        return cls(uuid.uuid4().hex, task, params, idempotency_key=idempotency_key, webhook=webhook)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def url(self) -> str:
        return f"{PREFIX}/{self.id}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "status": self.status,
            "progress": {"done": self.done, "total": self.total, "stage": self.stage},
            "created_at": rfc3339(self.created_at),
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at),
            "error": self.error,
            "urls": {
                "self": self.url,
                "result": f"{self.url}/result",
                "events": f"{self.url}/events",
            },
        }
