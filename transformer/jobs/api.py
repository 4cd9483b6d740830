"""The job API (CONTRACT section 6): `Prefer: respond-async` on the image routes, and the job
resource under /v1/jobs/{id}.

A submission is validated exactly as the synchronous request: the same upload reading, decoding
and bounds (operations.decode), so bad input gets the same 4xx and never becomes a job. Then the
upload is written to disk, the job stored (queued) and 202 answered with its JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .. import budget, metrics, operations
from ..errors import GatewayError
from ..uploads import read_upload
from . import service
from .files import RESULTS, UPLOADS
from .model import FAILED, PREFIX, QUEUED, RUNNING, SUCCEEDED, Job
from .store import QueueFull, StoreUnavailable
from .webhooks import Refused, redacted

logger = logging.getLogger("transformer.jobs")

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as Stripe and the IETF draft
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing a quiet stream
CLIENT_CLOSED = 499

router = APIRouter(prefix=PREFIX, tags=["jobs"])


def wants_async(request: Request) -> bool:
    """`Prefer: respond-async` (RFC 7240), among other preferences or not."""
    for value in request.headers.getlist("prefer"):
        for preference in value.split(","):
            token = preference.split(";")[0].split("=")[0].strip().lower()
            if token == "respond-async":
                return True
    return False


def _error(exc: GatewayError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


def _job_response(job: Job, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(job.to_json(), status_code=status, headers=headers)


def _accepted(job: Job) -> Response:
    headers = {"Location": job.url, "Preference-Applied": "respond-async"}
    return _job_response(job, 202, headers)


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise GatewayError(400, "Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key


async def _webhook(request: Request, jobs: service.Jobs) -> str | None:
    """The `webhook` query parameter, checked (SSRF rules, webhooks.py): 422 saying why not."""
    urls = request.query_params.getlist("webhook")
    if not urls:
        return None
    if len(urls) > 1:
        raise GatewayError(422, "webhook: give one URL, not several")
    try:
        await jobs.webhooks.check(urls[0])
    except Refused as exc:
        raise GatewayError(422, f"webhook {redacted(urls[0])} is refused: {exc}") from None
    return urls[0]


def _same_job(job: Job, op: operations.Operation) -> Job:
    if job.task != op.route:
        raise GatewayError(
            422,
            f"this Idempotency-Key was used for a {job.task} job ({job.url}); "
            "use a new key for a new job",
        )
    return job


def _full(jobs: service.Jobs, queued: int) -> GatewayError:
    return GatewayError(
        429,
        f"{queued} jobs are waiting to run, the most this gateway keeps (MAX_JOBS_QUEUED); "
        "retry after the time in Retry-After",
        {"Retry-After": str(jobs.runner.retry_after(queued))},
    )


async def submit(request: Request, op: operations.Operation, state: Any) -> Response:
    """`Prefer: respond-async` on an image route: validate like the synchronous request, store
    the job, 202. `state` is routes.State (settings, upload pace)."""
    start = time.perf_counter()
    status = 500
    try:
        jobs = service.current()
        key = _idempotency_key(request)
        webhook = await _webhook(request, jobs)
        if key is not None and (existing := await jobs.store.by_key(key)) is not None:
            status = 202
            return _accepted(_same_job(existing, op))
        queued = (await jobs.store.counts()).get(QUEUED, 0)
        if queued >= jobs.settings.max_queued:
            raise _full(jobs, queued)
        settings = state.settings
        data = await read_upload(request, settings.max_upload_bytes, state.pace)
        decoded = await operations.decode(settings, op, data)  # the synchronous checks
        for task in op.steps(decoded.rgb):
            state.predictors.replicas(task)  # 503 for a task this gateway does not serve
        del decoded
        job = Job.new(op.route, op.params(), key, webhook)
        await jobs.files.put(UPLOADS, job.id, data)
        del data
        try:
            stored, created = await jobs.store.add(job, jobs.settings.max_queued)
        except QueueFull as full:
            await jobs.files.remove(UPLOADS, job.id)
            raise _full(jobs, full.queued) from None
        if created:
            jobs.runner.wake()
            logger.info("job %s (%s): queued", job.id, job.task)
        else:  # the same key, submitted at the same time: the first one's job
            await jobs.files.remove(UPLOADS, job.id)
            _same_job(stored, op)
        status = 202
        return _accepted(stored)
    except GatewayError as exc:
        status = exc.status
        return _error(exc)
    except budget.ClientGone as exc:
        status = CLIENT_CLOSED
        logger.info("%s: the client hung up %s; no job was made", op.route, exc)
        return Response(status_code=CLIENT_CLOSED)
    except Exception:
        logger.exception("%s: submitting a job failed", op.route)
        return JSONResponse(
            {"detail": "internal error in the gateway; the details are in its log"},
            status_code=500,
        )
    finally:
        metrics.REQUEST_SECONDS.labels(op.route, str(status)).observe(time.perf_counter() - start)


# --- the job resource ---------------------------------------------------------------------------

JobId = Annotated[str, Path(description="The job's id, from the 202's Location.")]
_NOT_FOUND = {404: {"description": "Unknown, expired (JOB_TTL_S) or deleted job."}}


async def _job(job_id: str) -> tuple[service.Jobs, Job]:
    jobs = service.current()
    job = await jobs.store.get(job_id) if re.fullmatch(r"[0-9a-f]{32}", job_id) else None
    if job is None:
        raise GatewayError(404, f"no job {job_id}: unknown, expired (JOB_TTL_S) or deleted", {})
    return jobs, job


def _retry_after(jobs: service.Jobs, job: Job) -> int:
    """Seconds until the job has likely moved on: from its progress while it runs."""
    if job.status == RUNNING and job.started_at and job.done > 0:
        elapsed = time.time() - job.started_at
        left = elapsed * (job.total - job.done) / job.done
        return max(1, min(60, round(left)))
    return max(1, min(60, round(jobs.runner.seconds_per_job)))


@router.get("/{job_id}", summary="A job: status, progress, times, error", responses=_NOT_FOUND)
async def get_job(job_id: JobId) -> Response:
    try:
        _, job = await _job(job_id)
    except GatewayError as exc:
        return _error(exc)
    return _job_response(job)


@router.get(
    "/{job_id}/result",
    summary="A succeeded job's image, with the synchronous answer's headers",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
        409: {"description": "Not succeeded (Retry-After while queued or running)."},
        **_NOT_FOUND,
    },
)
async def get_result(job_id: JobId) -> Response:
    try:
        jobs, job = await _job(job_id)
        if job.status == SUCCEEDED:
            meta = job.result or {}
            return await jobs.files.response(
                RESULTS, job.id, meta.get("media_type"), meta.get("headers", {})
            )
        if job.status in (QUEUED, RUNNING):
            raise GatewayError(
                409,
                f"job {job.id} is {job.status} ({job.stage}); its result is not ready yet",
                {"Retry-After": str(_retry_after(jobs, job))},
            )
        if job.status == FAILED:
            error = job.error or {}
            raise GatewayError(
                409,
                f"job {job.id} failed and has no result: {error.get('status')} "
                f"{error.get('detail')}",
            )
        raise GatewayError(409, f"job {job.id} was canceled and has no result")
    except GatewayError as exc:
        return _error(exc)


def _event(job: Job) -> str:
    name = "done" if job.finished else "progress"
    return f"id: {job.version}\nevent: {name}\ndata: {json.dumps(job.to_json())}\n\n"


@router.get(
    "/{job_id}/events",
    summary="The job's changes as server-sent events (progress, then done)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **_NOT_FOUND},
)
async def get_events(
    job_id: JobId,
    last_event_id: Annotated[
        str | None,
        Header(description="Resume after this event (EventSource sends it on reconnecting)."),
    ] = None,
) -> Response:
    try:
        jobs, job = await _job(job_id)
    except GatewayError as exc:
        return _error(exc)
    try:
        last = int(last_event_id) if last_event_id else 0
    except ValueError:
        last = 0
    if job.finished and last >= job.version:
        return Response(status_code=204)  # seen its end: EventSource stops reconnecting

    async def stream() -> AsyncIterator[str]:
        seen = last
        draining = asyncio.ensure_future(jobs.draining.wait())
        try:
            while True:
                change = asyncio.ensure_future(jobs.store.wait(job_id, seen, KEEPALIVE_S))
                await asyncio.wait((change, draining), return_when=asyncio.FIRST_COMPLETED)
                if draining.done():  # the gateway stops: the client resumes elsewhere
                    change.cancel()
                    return
                try:
                    current = change.result()
                except StoreUnavailable:  # Redis away: keep the stream, ask again
                    yield ": the job store does not answer; retrying\n\n"
                    await asyncio.sleep(jobs.store.POLL_S)
                    continue
                if current is None:  # deleted or expired
                    return
                if current.version > seen:
                    seen = current.version
                    yield _event(current)
                    if current.finished:
                        return
                else:
                    yield ": keep-alive\n\n"
        finally:
            draining.cancel()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.post("/{job_id}/cancel", summary="Cancel a queued or running job", responses=_NOT_FOUND)
async def cancel_job(job_id: JobId) -> Response:
    try:
        jobs, _ = await _job(job_id)
        job = await jobs.store.cancel(job_id, jobs.settings.ttl_s)
    except GatewayError as exc:
        return _error(exc)
    if job is None:
        return _error(GatewayError(404, f"no job {job_id}: unknown, expired or deleted"))
    if jobs.runner.cancel_local(job_id):
        logger.info("job %s: canceled while running", job_id)
    jobs.webhooks.wake()
    return _job_response(job)


@router.delete(
    "/{job_id}",
    summary="Cancel if needed, and forget the job and its result",
    status_code=204,
    response_class=Response,
    responses=_NOT_FOUND,
)
async def delete_job(job_id: JobId) -> Response:
    try:
        jobs, _ = await _job(job_id)
        await jobs.store.cancel(job_id, jobs.settings.ttl_s)
        jobs.runner.cancel_local(job_id)
        await jobs.store.delete(job_id)
    except GatewayError as exc:
        return _error(exc)
    try:
        await jobs.files.remove_all(job_id)
    except StoreUnavailable as exc:  # the job is gone; its files go at the next start
        logger.warning("job %s: its files were not removed: %s", job_id, exc.detail)
    logger.info("job %s: deleted", job_id)
    return Response(status_code=204)
