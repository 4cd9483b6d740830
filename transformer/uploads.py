"""Read the uploaded image from a request, refusing oversize bodies before reading them whole.

Two shapes (CONTRACT section 1): multipart form field `file`, or a raw body with an `image/*`
Content-Type (`application/octet-stream` too: the type is decided from the bytes anyway).

Large uploads wait on disk while they arrive (SPOOL_BYTES), and how many arrive at once is bounded
by the queues (arrivals.py: 429 before the body when a task's queue is full).

A body that stops arriving for UPLOAD_IDLE_TIMEOUT_S, or that averages under
UPLOAD_MIN_BYTES_PER_S once that long has passed, is refused with 408. A client that hangs up
mid-upload raises budget.ClientGone (nobody to answer; the route logs one line).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from .budget import ClientGone
from .errors import GatewayError, bad_request, too_large, unsupported_type

FIELD = "file"
# Room for the multipart boundaries and part headers around a file of the maximum size.
MULTIPART_OVERHEAD = 64 * 1024
# An upload larger than this waits on disk (TMPDIR) while it arrives, as Starlette's multipart
# parser keeps its files; it is read into memory once, whole, when it is decoded.
SPOOL_BYTES = 1024 * 1024
HOW = f"send the image as multipart form field '{FIELD}' or as a raw body with Content-Type image/*"


class _OverLimit(Exception):
    pass


@dataclass
class Pace:
    """How slowly an upload may arrive."""

    idle_timeout_s: float
    min_bytes_per_s: int


def _too_slow(detail: str) -> GatewayError:
    return GatewayError(408, detail, {"Connection": "close"})


async def _paced(request: Request, pace: Pace) -> AsyncIterator[bytes]:
    """The body's chunks, 408 when they stop or trickle, ClientGone when the client hangs up."""
    start = time.monotonic()
    total = 0
    chunks = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(pace.idle_timeout_s):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise _too_slow(
                f"the upload stopped: nothing arrived for {pace.idle_timeout_s:g} s "
                f"(UPLOAD_IDLE_TIMEOUT_S) after {total:,} bytes"
            ) from None
        except ClientDisconnect:
            raise ClientGone(f"after sending {total:,} bytes of the upload") from None
        total += len(chunk)
        elapsed = time.monotonic() - start
        if elapsed > pace.idle_timeout_s and total < pace.min_bytes_per_s * elapsed:
            raise _too_slow(
                f"the upload is too slow: {total:,} bytes in {elapsed:.0f} s, under "
                f"{pace.min_bytes_per_s:,} bytes/s (UPLOAD_MIN_BYTES_PER_S)"
            )
        yield chunk


def _over(limit: int) -> Exception:
    return too_large(f"the upload is over the limit of {limit / 1024 / 1024:g} MB (MAX_UPLOAD_MB)")


def _declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"invalid Content-Length header {raw!r}") from None


async def _capped(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise _OverLimit
        yield chunk


async def _from_multipart(request: Request, limit: int, pace: Pace) -> bytes:
    parser = MultiPartParser(
        request.headers,
        _capped(_paced(request, pace), limit + MULTIPART_OVERHEAD),
        max_files=4,
        max_fields=32,
    )
    try:
        form = await parser.parse()
    except _OverLimit:
        raise _over(limit) from None
    except MultiPartException as exc:
        raise bad_request(f"malformed multipart upload: {exc.message}; {HOW}") from None
    try:
        upload = form.get(FIELD)
        if upload is None or isinstance(upload, str):
            found = ", ".join(sorted({key for key, _ in form.multi_items()})) or "none"
            raise bad_request(f"no file in form field '{FIELD}' (fields sent: {found}); {HOW}")
        data = await upload.read(limit + 1)
    finally:
        await form.close()
    if len(data) > limit:
        raise _over(limit)
    return data


async def _from_body(request: Request, limit: int, pace: Pace) -> bytes:
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as spool:
        try:
            async for chunk in _capped(_paced(request, pace), limit):
                spool.write(chunk)  # on disk past SPOOL_BYTES, in one piece in memory below
        except _OverLimit:
            raise _over(limit) from None
        spool.seek(0)
        return spool.read()


async def read_upload(request: Request, limit: int, pace: Pace) -> bytes:
    """The uploaded file's bytes; 400/408/413/415 (as GatewayError) for the client's mistakes."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = _declared_length(request)
    if media == "multipart/form-data":
        if length is not None and length > limit + MULTIPART_OVERHEAD:
            raise _over(limit)
        data = await _from_multipart(request, limit, pace)
    elif media.startswith("image/") or media == "application/octet-stream":
        if length is not None and length > limit:
            raise _over(limit)
        data = await _from_body(request, limit, pace)
    elif not media and not length:
        raise bad_request(f"no image in the request; {HOW}")
    else:
        raise unsupported_type(f"Content-Type {media or '(none)'} is not accepted; {HOW}")
    if not data:
        raise bad_request("the uploaded file is empty")
    return data
