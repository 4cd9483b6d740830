"""Send one photo to the gateway and write the answer, retrying what is worth retrying.

503 with Retry-After and 429 (model not ready, queue full) wait for the answer's Retry-After; 504
and connections lost mid-run wait with exponential backoff. Both are bounded by the number of
retries. What retrying cannot fix is not retried:
- about this file (400 undecodable, 408 upload too slow, 413 too large, 415 not an image, 500):
  the file fails with the gateway's `detail`, the others go on;
- about every file (503 without Retry-After: the gateway does not offer the task; 401, 403, 404,
  405 and other 4xx: the wrong server, a proxy's refusal): the run stops at once (`Outcome.stop`);
  422 (options the gateway refuses) stops it as a usage error (`Outcome.refused`).
Results are written with the permissions the umask gives, as any file the user creates.
"""

from __future__ import annotations

import mimetypes
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from .inputs import Job

WAIT_FOR_RETRY_AFTER = {429, 503}  # 503 only with Retry-After: without, the task is not offered
BACKOFF_STATUSES = {504}
# 4xx about this one file; any other 4xx is about every file (wrong server, proxy, options).
FILE_STATUSES = {400, 408, 413, 415}
# The connection failed or broke: the gateway is down or restarting. A read timeout is not
# retried: the work may still be running there and would only be started again.
RETRIED_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


@dataclass
class Policy:
    retries: int = 3
    max_wait_s: float = 120.0  # longest single wait, whatever Retry-After says


@dataclass
class Outcome:
    job: Job
    status: str  # "done", "skipped" or "failed"
    message: str = ""
    seconds: float = 0.0
    refused: bool = False  # 422: the gateway refused the options, so every file would fail
    stop: bool = False  # every other file would fail the same way: stop the run (exit 1)


def detail_of(reply: httpx.Response) -> str:
    try:
        detail = reply.json().get("detail")
    except (ValueError, AttributeError):
        return reply.text.strip()[:300] or reply.reason_phrase
    if isinstance(detail, list):  # FastAPI's 422 list
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', [])[1:]) or 'request'}: {item.get('msg')}"
            for item in detail
        )
    return str(detail)


def _about_every_file(status: int) -> bool:
    return status == 503 or (400 <= status < 500 and status not in FILE_STATUSES)


def retry_after(reply: httpx.Response, fallback: float) -> float:
    try:
        return max(0.0, float(reply.headers.get("retry-after", "")))
    except ValueError:
        return fallback


def backoff(attempt: int) -> float:
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (attempt - 1))


def write_atomically(target: Path, data: bytes) -> None:
    """All of `data` at `target` or nothing: written beside it, then renamed over it. Created with
    mode 0666 less the umask (as `open` would; mkstemp's 0600 would hide results from a group)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.parent / f".{target.name}.{secrets.token_hex(6)}.part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def process(
    client: httpx.Client,
    route: str,
    params: dict[str, str],
    job: Job,
    policy: Policy,
    say: Callable[[str], None],
) -> Outcome:
    """The synchronous request: the answer is the image."""
    start = time.monotonic()
    reply = post(client, route, params, job, policy, say)
    if isinstance(reply, Outcome):
        return reply
    return write_result(job, reply.content, start)


def write_result(job: Job, data: bytes, start: float) -> Outcome:
    assert job.target is not None
    try:
        write_atomically(job.target, data)
    except OSError as exc:
        return Outcome(job, "failed", f"cannot write {job.target}: {exc}")
    return Outcome(job, "done", str(job.target), time.monotonic() - start)


def post(
    client: httpx.Client,
    route: str,
    params: dict[str, str],
    job: Job,
    policy: Policy,
    say: Callable[[str], None],
    headers: dict[str, str] | None = None,
) -> httpx.Response | Outcome:
    """The photo POSTed to `route`, retried as the module says: the 200 or 202 answer, or the
    failed Outcome."""
    start = time.monotonic()
    assert job.target is not None
    try:
        data = job.source.read_bytes()
    except OSError as exc:
        return Outcome(job, "failed", f"cannot read it: {exc.strerror or exc}")
    media = mimetypes.guess_type(job.source.name)[0] or "application/octet-stream"
    attempt = 0
    while True:
        attempt += 1
        wait = reply = None
        try:
            reply = client.post(
                route,
                params=params,
                files={"file": (job.source.name, data, media)},
                headers=headers,
            )
        except RETRIED_ERRORS as exc:
            problem = f"cannot reach the gateway ({type(exc).__name__}: {exc})"
            wait = backoff(attempt)
        except httpx.TimeoutException:
            return Outcome(job, "failed", "no answer within --timeout; try a larger --timeout")
        except httpx.HTTPError as exc:  # e.g. the client was closed on Ctrl-C
            return Outcome(job, "failed", f"{type(exc).__name__}: {exc}")
        else:
            if reply.status_code in (200, 202):
                return reply
            status = reply.status_code
            problem = f"HTTP {status}: {detail_of(reply)}"
            if status in WAIT_FOR_RETRY_AFTER and (status == 429 or "retry-after" in reply.headers):
                wait = retry_after(reply, backoff(attempt))
            elif status in BACKOFF_STATUSES:
                wait = backoff(attempt)
        if wait is None:
            refused = reply is not None and reply.status_code == 422
            stop = reply is not None and not refused and _about_every_file(reply.status_code)
            return Outcome(job, "failed", problem, time.monotonic() - start, refused, stop)
        if attempt > policy.retries:
            tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
            return Outcome(
                job, "failed", f"{problem} (gave up after {tries})", time.monotonic() - start
            )
        wait = min(wait, policy.max_wait_s)
        say(f"retry  {job.source}: {problem} (retry {attempt}/{policy.retries} in {wait:g} s)")
        time.sleep(wait)
