"""Send one photo to the gateway and write the answer, retrying what is worth retrying.

503 and 429 (model not ready, queue full) wait for the answer's Retry-After; 504 and connection
failures wait with exponential backoff. Both are bounded by the number of retries. Anything else
(400, 413, 415, 422, 500) fails at once with the gateway's `detail`; a 422 (options out of the
gateway's range) stops the whole run as a usage error.
"""

from __future__ import annotations

import mimetypes
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from .inputs import Job

WAIT_FOR_RETRY_AFTER = {429, 503}
BACKOFF_STATUSES = {504}
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


def retry_after(reply: httpx.Response, fallback: float) -> float:
    try:
        return max(0.0, float(reply.headers.get("retry-after", "")))
    except ValueError:
        return fallback


def backoff(attempt: int) -> float:
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (attempt - 1))


def write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(part, target)
    except BaseException:
        Path(part).unlink(missing_ok=True)
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
            problem = f"HTTP {reply.status_code}: {detail_of(reply)}"
            if reply.status_code in WAIT_FOR_RETRY_AFTER:
                wait = retry_after(reply, backoff(attempt))
            elif reply.status_code in BACKOFF_STATUSES:
                wait = backoff(attempt)
        if wait is None:
            refused = reply is not None and reply.status_code == 422
            return Outcome(job, "failed", problem, time.monotonic() - start, refused)
        if attempt > policy.retries:
            tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
            return Outcome(
                job, "failed", f"{problem} (gave up after {tries})", time.monotonic() - start
            )
        wait = min(wait, policy.max_wait_s)
        say(f"retry  {job.source}: {problem} (retry {attempt}/{policy.retries} in {wait:g} s)")
        time.sleep(wait)
