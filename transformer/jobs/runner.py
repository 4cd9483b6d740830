"""Runs queued jobs: claims them from the store, a bounded number at a time (JOBS_CONCURRENCY),
and runs each through the same operation code as the synchronous route (operations.py).

- Sharing the predictors with synchronous requests: a job's predictor calls are admitted at
  background priority (admission.background): whenever a synchronous request waits for a task's
  predictor it goes before any waiting job call, so a backlog of jobs delays a synchronous
  request by at most the job call already running there. Jobs themselves wait in the store,
  never in the synchronous queue (and never make it answer 429).
- Budget: each run has JOB_TIMEOUT_S (budget.Budget, carried to every predictor call as its gRPC
  deadline, and around the whole run).
- A predictor that is unavailable for now (503 with Retry-After) is waited for, the work tried
  again within the budget: a predictor restart does not fail a backlog of jobs. The steps that
  had finished are not run again (their answers are kept for the retry: tracker.StepReports).
  While it waits it does not count against JOBS_CONCURRENCY, so jobs for other predictors run
  meanwhile; at most JOBS_CONCURRENCY more jobs wait so (their uploads decoded in memory). (A
  task this gateway does not serve at all is refused at submission, as the synchronous route
  refuses it.)
- Cancel: the job's asyncio task is cancelled, which cancels its gRPC call; the predictor stops
  within a tile. A cancel made by another process is seen at the next lease renewal.
- Restarts: a running job holds a lease, renewed every JobSettings.tick_s. A job whose gateway
  died (lease lapsed) is queued again and run from the start (at least once), up to
  JOB_MAX_ATTEMPTS runs; a gateway that stops on purpose puts its jobs back at once.
- Expiry: finished jobs past JOB_TTL_S are removed with their files.
- A job store that does not answer (Redis down or unreachable: store.StoreUnavailable): running
  jobs go on; their progress is written again once it answers, and their end is retried every
  tick until it is written (or the lease lapsed meanwhile and another gateway took the job over:
  then that run's result is dropped, at least once). Claims and renewals are retried each tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from .. import admission, budget, metrics, operations, progress
from ..errors import GatewayError
from .config import JobSettings
from .files import RESULTS, UPLOADS, FileStore
from .model import CANCELED, FAILED, SUCCEEDED, Job
from .store import JobStore, StoreUnavailable
from .tracker import SCALE, StepReports, Tracker

logger = logging.getLogger("transformer.jobs")
# Files without a job are removed at start once this old (a submission in flight writes its
# upload just before its job).
ORPHAN_AGE_S = 600.0
INTERNAL = "internal error in the gateway; the details are in its log"  # as the routes say


class ProgressWriter:
    """Writes a running job's progress to the store, coalescing bursts: the latest report is
    written once the previous write is done (predictors may report every few milliseconds)."""

    def __init__(self, store: JobStore, job: Job, owner: str):
        self.store = store
        self.job_id = job.id
        self.owner = owner
        self.latest: tuple[int, int, str] = (job.done, job.total, job.stage)
        self._loop = asyncio.get_running_loop()
        self._pending = asyncio.Event()
        self._task = asyncio.create_task(self._write())

    def update(self, done: int, total: int, stage: str) -> None:
        self.latest = (done, total, stage)
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._pending.set()
        else:  # a listener called from another thread
            self._loop.call_soon_threadsafe(self._pending.set)

    async def _write(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            try:
                await self.store.set_progress(self.job_id, self.owner, *self.latest)
            except StoreUnavailable as exc:  # the next report (or the end) writes it again
                logger.warning("job %s: progress not written: %s", self.job_id, exc.detail)
            except Exception:
                logger.exception("job %s: writing its progress failed", self.job_id)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Runner:
    def __init__(
        self, settings: JobSettings, store: JobStore, files: FileStore, gateway: Callable[[], Any]
    ):
        self.settings = settings
        self.store = store
        self.files = files
        self.gateway = gateway  # () -> routes.State: the gateway's settings and predictors
        self.owner = uuid.uuid4().hex
        self.running: dict[str, asyncio.Task] = {}
        self.waiting: set[str] = set()  # running jobs waiting for a predictor (no slot held)
        self.seconds_per_job = 10.0  # moving average of a run, for Retry-After
        self.stopping = False
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task] = []
        self.on_finish: Callable[[], None] = lambda: None  # a job ended (its webhook is due)

    # --- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._recover()
        await self._remove_orphans()
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="jobs-claim"),
            asyncio.create_task(self._tick_loop(), name="jobs-tick"),
        ]

    async def stop(self) -> None:
        """Cancel the loops and the running jobs; those jobs go back to the queue."""
        self.stopping = True
        for task in self._loops:
            task.cancel()
        jobs = dict(self.running)
        for task in jobs.values():
            task.cancel()
        await asyncio.gather(*self._loops, *jobs.values(), return_exceptions=True)
        for job_id in jobs:  # those cancelled before they began (a no-op for the others)
            try:
                await self.store.release(job_id, self.owner)
            except StoreUnavailable as exc:  # its lease lapses: another gateway takes it over
                logger.warning("job %s: not put back in the queue: %s", job_id, exc.detail)

    def wake(self) -> None:
        self._wake.set()

    def cancel_local(self, job_id: str) -> bool:
        task = self.running.get(job_id)
        if task is None:
            return False
        task.cancel()
        return True

    def retry_after(self, queued: int) -> int:
        """Seconds until `queued` jobs have likely moved by one place each."""
        rounds = max(queued, 1) / self.settings.concurrency
        return max(1, min(3600, math.ceil(rounds * self.seconds_per_job)))

    # --- loops --------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                while self._has_room():
                    job = await self.store.claim(self.owner, self.settings.lease_s)
                    if job is None:
                        break
                    self.running[job.id] = asyncio.create_task(self._run(job), name=f"job-{job.id}")
                    logger.info("job %s: running here (run %d)", job.id, job.attempts)
            except StoreUnavailable as exc:
                logger.warning("jobs: claiming a job failed; retrying: %s", exc.detail)
            except Exception:
                logger.exception("jobs: claiming a job failed; retrying")
            # Woken by a submission or a finished job; polls for other processes' submissions.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.tick_s)

    def _has_room(self) -> bool:
        """A job may be claimed: fewer than JOBS_CONCURRENCY at work, and fewer than as many
        again waiting for a predictor."""
        at_work = len(self.running) - len(self.waiting)
        concurrency = self.settings.concurrency
        return at_work < concurrency and len(self.running) < 2 * concurrency

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                await self._tick()
            except StoreUnavailable as exc:
                logger.warning("jobs: lease renewal or clean-up failed; retrying: %s", exc.detail)
            except Exception:
                logger.exception("jobs: lease renewal or clean-up failed; retrying")

    async def _tick(self) -> None:
        here = dict(self.running)  # before renewing: a job claimed meanwhile is not judged
        owned = await self.store.renew(self.owner, self.settings.lease_s)
        for job_id, task in here.items():
            if job_id not in owned and not task.done():  # canceled, deleted or taken over
                logger.info("job %s: no longer running here; stopping its work", job_id)
                task.cancel()
        await self._recover()
        for job_id in await self.store.expired():
            await self.files.remove_all(job_id)
            await self.store.delete(job_id)
        counts = await self.store.counts()
        for status in ("queued", "running", SUCCEEDED, FAILED, CANCELED):
            metrics.JOBS.labels(status).set(counts.get(status, 0))

    async def _recover(self) -> None:
        requeued, failed = await self.store.recover(self.settings.max_attempts, self.settings.ttl_s)
        for job_id in requeued:
            logger.warning("job %s: its gateway stopped while running it; queued again", job_id)
        for job_id in failed:
            logger.error("job %s: its gateway stopped too often while running it; failed", job_id)
            await self._forget(UPLOADS, job_id)
        if failed:
            self.on_finish()
        if requeued:
            self.wake()

    async def _remove_orphans(self) -> None:
        known = await self.store.ids()
        try:
            for job_id in await self.files.ids(ORPHAN_AGE_S) - known:
                await self.files.remove_all(job_id)
        except StoreUnavailable as exc:  # tried again at the next start
            logger.warning("jobs: files without a job were not removed: %s", exc.detail)

    async def _forget(self, kind: str, job_id: str) -> None:
        """Remove a file the job no longer needs; one the results store keeps for now goes with
        the job at its expiry."""
        try:
            await self.files.remove(kind, job_id)
        except StoreUnavailable as exc:
            logger.warning("job %s: its %s file was not removed: %s", job_id, kind, exc.detail)

    # --- one job ------------------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        try:
            await self._execute(job)
        except asyncio.CancelledError:
            if self.stopping:
                if await self.store.release(job.id, self.owner):
                    logger.info("job %s: the gateway is stopping; queued again", job.id)
            else:  # canceled or deleted meanwhile (then this changes nothing)
                await self.store.finish(
                    job.id, self.owner, CANCELED, self.settings.ttl_s,
                    progress=(job.done, job.total, "canceled"),
                )  # fmt: skip
        except StoreUnavailable as exc:
            logger.warning("job %s: its end was not written: %s", job.id, exc.detail)
        except Exception:
            logger.exception("job %s: the runner failed", job.id)
        finally:
            self.running.pop(job.id, None)
            self.wake()
            self.on_finish()

    async def _operate(
        self, job: Job, op: operations.Operation, predictors, rgb, tracker: Tracker, job_budget
    ) -> Any:
        """The operation's work. A predictor that is unavailable for now (503 with Retry-After:
        restarting, loading, unreachable) is waited for and the work tried again, for as long
        as the job's budget lasts; then the job fails with that 503. The steps that had
        finished are not run again: their answers are kept (StepReports.again). While it waits
        its slot is free for another job."""
        reports = StepReports(predictors)
        while True:
            try:
                return await op.run(reports, rgb)
            except GatewayError as exc:
                retry_after = exc.headers.get("Retry-After")
                left = job_budget.remaining()
                if exc.status != 503 or retry_after is None or left < 1:
                    raise
                wait = min(float(retry_after), left - 0.5)
                tracker.index = 0
                tracker.set_stage(f"waiting {wait:.0f} s: {exc.detail}")
                self.waiting.add(job.id)
                self.wake()
                try:
                    await asyncio.sleep(wait)
                finally:
                    self.waiting.discard(job.id)
                reports.again()

    async def _execute(self, job: Job) -> None:
        state = self.gateway()
        settings = state.settings
        if job.attempts == 1:
            metrics.JOB_WAIT_SECONDS.labels(job.task).observe(job.started_at - job.created_at)
        started = time.perf_counter()
        job_budget = budget.Budget.starting_now(
            self.settings.timeout_s, setting="JOB_TIMEOUT_S", holder="job"
        )
        budget.current.set(job_budget)
        admission.background.set(True)
        writer = ProgressWriter(self.store, job, self.owner)
        tracker = Tracker([job.task], job.done, writer.update)
        status, error, result = FAILED, None, None
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                data = await self.files.read(UPLOADS, job.id)
                op = operations.from_params(job.task, job.params)
                decoded = await operations.decode(settings, op, data)
                del data
                tracker.steps = op.steps(decoded.rgb)
                progress.current.set(tracker.listener)
                tracker.set_stage("started")
                out = await self._operate(
                    job, op, state.predictors, decoded.rgb, tracker, job_budget
                )
                answer = await operations.encode(op, decoded, out, started)
                del decoded, out
                await self.files.put(RESULTS, job.id, answer.body)
            status = SUCCEEDED
            result = {"media_type": answer.media_type, "headers": answer.headers}
            tracker.done, tracker.stage = SCALE, "done"
        except GatewayError as exc:
            detail = exc.detail
            if exc.status == 504 and job_budget.remaining() < 0.1:  # its deadline, not ours
                detail = job_budget.expired(f"in its {tracker.stage} stage").detail
            error = {"status": exc.status, "detail": detail}
            if exc.internal:
                logger.warning("job %s (%s): %s", job.id, job.task, exc.for_log())
            tracker.stage = "failed"
        except TimeoutError:
            detail = job_budget.expired(f"in its {tracker.stage} stage").detail
            error = {"status": 504, "detail": detail}
            tracker.stage = "failed"
        except FileNotFoundError:
            error = {"status": 500, "detail": "the job's upload is missing from RESULTS_STORE"}
            tracker.stage = "failed"
        except Exception:
            logger.exception("job %s (%s) failed", job.id, job.task)
            error = {"status": 500, "detail": INTERNAL}
            tracker.stage = "failed"
        finally:
            await writer.close()
        took = time.perf_counter() - started
        while True:
            try:
                finished = await self.store.finish(
                    job.id,
                    self.owner,
                    status,
                    self.settings.ttl_s,
                    progress=(tracker.done, SCALE, tracker.stage),
                    error=error,
                    result=result,
                )
                break
            except StoreUnavailable as exc:  # kept, and written once the store answers
                logger.warning("job %s: its end is not written yet: %s", job.id, exc.detail)
                await asyncio.sleep(self.settings.tick_s)
        if finished is None:  # canceled, deleted or taken over meanwhile: not ours to keep
            await self._forget(RESULTS, job.id)
            return
        await self._forget(UPLOADS, job.id)
        metrics.JOB_RUN_SECONDS.labels(job.task, status).observe(took)
        if status == SUCCEEDED:
            self.seconds_per_job += 0.3 * (took - self.seconds_per_job)
        else:
            logger.info("job %s (%s): failed with %s", job.id, job.task, error["status"])
