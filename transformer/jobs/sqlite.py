"""The embedded job store: one SQLite file (stdlib sqlite3), for one gateway replica.

All statements run on one thread of their own, so the event loop never waits on the disk and
the connection is never shared between threads. WAL journal with synchronous=FULL: an accepted
job (202) is on disk, and survives a killed process or a power cut. Several gateway processes
on one file (uvicorn workers) are safe: every change is one transaction (BEGIN IMMEDIATE), and
ownership is decided by conditional updates.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .model import CANCELED, FAILED, FINISHED, QUEUED, RUNNING, WEBHOOK_PENDING, Job
from .store import JobStore, QueueFull

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    done INTEGER NOT NULL,
    total INTEGER NOT NULL,
    stage TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    version INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    owner TEXT,
    lease_until REAL,
    expires_at REAL,
    idempotency_key TEXT UNIQUE,
    result TEXT
);
"""
# Columns added since the first schema: added to an existing file when it is opened.
ADDED = {
    "webhook": "TEXT",
    "webhook_state": "TEXT",
    "webhook_attempts": "INTEGER NOT NULL DEFAULT 0",
    "webhook_next_at": "REAL",
}
INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_webhook ON jobs (webhook_next_at)
    WHERE webhook_state = 'pending';
"""
COLUMNS = (
    "id", "task", "params", "status", "done", "total", "stage", "created_at", "started_at",
    "finished_at", "error", "version", "attempts", "owner", "lease_until", "expires_at",
    "idempotency_key", "result", "webhook", "webhook_state", "webhook_attempts",
    "webhook_next_at",
)  # fmt: skip
JSON_COLUMNS = ("params", "error", "result")
SELECT = f"SELECT {', '.join(COLUMNS)} FROM jobs"
LIVE = "(expires_at IS NULL OR expires_at > ?)"
# Set in the update that ends a job: its webhook (if any) is due now (webhooks.py delivers it).
WEBHOOK_DUE = (
    "webhook_state = CASE WHEN webhook IS NULL THEN NULL ELSE 'pending' END, "
    "webhook_next_at = CASE WHEN webhook IS NULL THEN NULL ELSE ? END"
)


def _row(job: Job) -> tuple:
    values = []
    for name in COLUMNS:
        value = getattr(job, name)
        values.append(json.dumps(value) if name in JSON_COLUMNS and value is not None else value)
    return tuple(values)


def _job(row: tuple | None) -> Job | None:
    if row is None:
        return None
    fields = dict(zip(COLUMNS, row, strict=True))
    for name in JSON_COLUMNS:
        if fields[name] is not None:
            fields[name] = json.loads(fields[name])
    return Job(**fields)


class SqliteJobStore(JobStore):
    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs-sqlite")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # --- on the store's thread -------------------------------------------------------------

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.executescript(SCHEMA)
        have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        for name, kind in ADDED.items():
            if name not in have:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        db.executescript(INDEXES)
        self._db = db

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            out = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return out

    def _get(self, db: sqlite3.Connection, job_id: str) -> Job | None:
        return _job(
            db.execute(f"{SELECT} WHERE id = ? AND {LIVE}", (job_id, time.time())).fetchone()
        )

    def _add(self, job: Job, max_queued: int) -> tuple[Job, bool]:
        def tx(db: sqlite3.Connection) -> tuple[Job, bool]:
            now = time.time()
            if job.idempotency_key is not None:
                row = db.execute(
                    f"{SELECT} WHERE idempotency_key = ?", (job.idempotency_key,)
                ).fetchone()
                existing = _job(row)
                if existing is not None and (existing.expires_at or now + 1) > now:
                    return existing, False
                if existing is not None:  # expired, not removed yet: its key is free again
                    db.execute(
                        "UPDATE jobs SET idempotency_key = NULL WHERE id = ?", (existing.id,)
                    )
            (queued,) = db.execute(
                "SELECT count(*) FROM jobs WHERE status = ?", (QUEUED,)
            ).fetchone()
            if queued >= max_queued:
                raise QueueFull(queued)
            marks = ", ".join("?" * len(COLUMNS))
            db.execute(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({marks})", _row(job))
            return job, True

        return self._tx(tx)

    def _claim(self, owner: str, lease_s: float) -> Job | None:
        def tx(db: sqlite3.Connection) -> Job | None:
            row = db.execute(
                "SELECT id FROM jobs WHERE status = ? ORDER BY created_at LIMIT 1", (QUEUED,)
            ).fetchone()
            if row is None:
                return None
            now = time.time()
            db.execute(
                "UPDATE jobs SET status = ?, owner = ?, lease_until = ?, started_at = ?, "
                "attempts = attempts + 1, version = version + 1, stage = ? WHERE id = ?",
                (RUNNING, owner, now + lease_s, now, "starting", row[0]),
            )
            return self._get(db, row[0])

        return self._tx(tx)

    def _set_progress(self, job_id: str, owner: str, done: int, total: int, stage: str) -> bool:
        cursor = self._db.execute(
            "UPDATE jobs SET done = ?, total = ?, stage = ?, version = version + 1 "
            "WHERE id = ? AND status = ? AND owner = ?",
            (done, total, stage, job_id, RUNNING, owner),
        )
        return cursor.rowcount == 1

    def _renew(self, owner: str, lease_s: float) -> set[str]:
        def tx(db: sqlite3.Connection) -> set[str]:
            db.execute(
                "UPDATE jobs SET lease_until = ? WHERE owner = ? AND status = ?",
                (time.time() + lease_s, owner, RUNNING),
            )
            rows = db.execute(
                "SELECT id FROM jobs WHERE owner = ? AND status = ?", (owner, RUNNING)
            ).fetchall()
            return {row[0] for row in rows}

        return self._tx(tx)

    def _finish(
        self,
        job_id: str,
        owner: str,
        status: str,
        ttl_s: float,
        progress: tuple[int, int, str],
        error: dict | None,
        result: dict | None,
    ) -> Job | None:
        def tx(db: sqlite3.Connection) -> Job | None:
            now = time.time()
            cursor = db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, expires_at = ?, error = ?, "
                "result = ?, done = ?, total = ?, stage = ?, owner = NULL, lease_until = NULL, "
                f"version = version + 1, {WEBHOOK_DUE} WHERE id = ? AND status = ? AND owner = ?",
                (
                    status, now, now + ttl_s,
                    json.dumps(error) if error else None, json.dumps(result) if result else None,
                    *progress, now, job_id, RUNNING, owner,
                ),
            )  # fmt: skip
            return self._get(db, job_id) if cursor.rowcount == 1 else None

        return self._tx(tx)

    def _cancel(self, job_id: str, ttl_s: float) -> Job | None:
        def tx(db: sqlite3.Connection) -> Job | None:
            now = time.time()
            db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, expires_at = ?, stage = ?, "
                f"lease_until = NULL, version = version + 1, {WEBHOOK_DUE} "
                f"WHERE id = ? AND status IN (?, ?) AND {LIVE}",
                (CANCELED, now, now + ttl_s, "canceled", now, job_id, QUEUED, RUNNING, now),
            )
            return self._get(db, job_id)

        return self._tx(tx)

    def _release(self, job_id: str, owner: str) -> bool:
        cursor = self._db.execute(
            "UPDATE jobs SET status = ?, owner = NULL, lease_until = NULL, stage = ?, "
            "attempts = attempts - 1, version = version + 1 "
            "WHERE id = ? AND status = ? AND owner = ?",
            (QUEUED, "queued again: the gateway running it stopped", job_id, RUNNING, owner),
        )
        return cursor.rowcount == 1

    def _recover(self, max_attempts: int, ttl_s: float) -> tuple[list[str], list[str]]:
        def tx(db: sqlite3.Connection) -> tuple[list[str], list[str]]:
            now = time.time()
            rows = db.execute(
                "SELECT id, attempts FROM jobs WHERE status = ? AND lease_until < ?",
                (RUNNING, now),
            ).fetchall()
            requeued, failed = [], []
            for job_id, attempts in rows:
                if attempts >= max_attempts:
                    error = {
                        "status": 500,
                        "detail": f"the gateway running this job stopped {attempts} times "
                        "before it ended (JOB_MAX_ATTEMPTS); see the gateway's log",
                    }
                    db.execute(
                        "UPDATE jobs SET status = ?, finished_at = ?, expires_at = ?, "
                        "error = ?, stage = ?, owner = NULL, lease_until = NULL, "
                        f"version = version + 1, {WEBHOOK_DUE} WHERE id = ?",
                        (FAILED, now, now + ttl_s, json.dumps(error), "failed", now, job_id),
                    )
                    failed.append(job_id)
                else:
                    db.execute(
                        "UPDATE jobs SET status = ?, owner = NULL, lease_until = NULL, "
                        "stage = ?, version = version + 1 WHERE id = ?",
                        (QUEUED, "queued again: the gateway running it stopped", job_id),
                    )
                    requeued.append(job_id)
            return requeued, failed

        return self._tx(tx)

    def _claim_webhook(self, now: float, hold_s: float) -> tuple[Job | None, float | None]:
        def tx(db: sqlite3.Connection) -> tuple[Job | None, float | None]:
            row = db.execute(
                "SELECT id FROM jobs WHERE webhook_state = ? AND webhook_next_at <= ? "
                "ORDER BY webhook_next_at LIMIT 1",
                (WEBHOOK_PENDING, now),
            ).fetchone()
            if row is None:
                (next_at,) = db.execute(
                    "SELECT min(webhook_next_at) FROM jobs WHERE webhook_state = ?",
                    (WEBHOOK_PENDING,),
                ).fetchone()
                return None, next_at
            db.execute(
                "UPDATE jobs SET webhook_next_at = ?, webhook_attempts = webhook_attempts + 1 "
                "WHERE id = ?",
                (now + hold_s, row[0]),
            )
            return _job(db.execute(f"{SELECT} WHERE id = ?", (row[0],)).fetchone()), None

        return self._tx(tx)

    # --- the interface -----------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)

    async def add(self, job: Job, max_queued: int) -> tuple[Job, bool]:
        return await self._run(self._add, job, max_queued)

    async def get(self, job_id: str) -> Job | None:
        return await self._run(self._get, self._db, job_id)

    async def by_key(self, idempotency_key: str) -> Job | None:
        def find() -> Job | None:
            row = self._db.execute(
                f"{SELECT} WHERE idempotency_key = ? AND {LIVE}", (idempotency_key, time.time())
            ).fetchone()
            return _job(row)

        return await self._run(find)

    async def claim(self, owner: str, lease_s: float) -> Job | None:
        job = await self._run(self._claim, owner, lease_s)
        if job is not None:
            self._notify(job.id)
        return job

    async def set_progress(
        self, job_id: str, owner: str, done: int, total: int, stage: str
    ) -> bool:
        changed = await self._run(self._set_progress, job_id, owner, done, total, stage)
        if changed:
            self._notify(job_id)
        return changed

    async def renew(self, owner: str, lease_s: float) -> set[str]:
        return await self._run(self._renew, owner, lease_s)

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
        assert status in FINISHED
        job = await self._run(self._finish, job_id, owner, status, ttl_s, progress, error, result)
        self._notify(job_id)
        return job

    async def cancel(self, job_id: str, ttl_s: float) -> Job | None:
        job = await self._run(self._cancel, job_id, ttl_s)
        self._notify(job_id)
        return job

    async def release(self, job_id: str, owner: str) -> bool:
        released = await self._run(self._release, job_id, owner)
        self._notify(job_id)
        return released

    async def recover(self, max_attempts: int, ttl_s: float) -> tuple[list[str], list[str]]:
        requeued, failed = await self._run(self._recover, max_attempts, ttl_s)
        for job_id in requeued + failed:
            self._notify(job_id)
        return requeued, failed

    async def expired(self) -> list[str]:
        def find() -> list[str]:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE expires_at <= ?", (time.time(),)
            ).fetchall()
            return [row[0] for row in rows]

        return await self._run(find)

    async def claim_webhook(self, now: float, hold_s: float) -> tuple[Job | None, float | None]:
        return await self._run(self._claim_webhook, now, hold_s)

    async def set_webhook(self, job_id: str, state: str, next_at: float | None) -> None:
        def update() -> None:
            self._db.execute(
                "UPDATE jobs SET webhook_state = ?, webhook_next_at = ? WHERE id = ?",
                (state, next_at, job_id),
            )

        await self._run(update)

    async def delete(self, job_id: str) -> bool:
        def remove() -> bool:
            return self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 1

        deleted = await self._run(remove)
        self._notify(job_id)
        return deleted

    async def ids(self) -> set[str]:
        def all_ids() -> set[str]:
            return {row[0] for row in self._db.execute("SELECT id FROM jobs")}

        return await self._run(all_ids)

    async def counts(self) -> dict[str, int]:
        def count() -> dict[str, int]:
            rows = self._db.execute(
                f"SELECT status, count(*) FROM jobs WHERE {LIVE} GROUP BY status", (time.time(),)
            )
            return dict(rows.fetchall())

        return await self._run(count)
