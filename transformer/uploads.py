"""Read the uploaded image from a request, refusing oversize bodies before reading them whole.

Two shapes (CONTRACT section 1): multipart form field `file`, or a raw body with an `image/*`
Content-Type (`application/octet-stream` too: the type is decided from the bytes anyway).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from .errors import bad_request, too_large, unsupported_type

FIELD = "file"
# Room for the multipart boundaries and part headers around a file of the maximum size.
MULTIPART_OVERHEAD = 64 * 1024
HOW = f"send the image as multipart form field '{FIELD}' or as a raw body with Content-Type image/*"


class _OverLimit(Exception):
    pass


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


async def _from_multipart(request: Request, limit: int) -> bytes:
    parser = MultiPartParser(
        request.headers,
        _capped(request.stream(), limit + MULTIPART_OVERHEAD),
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


async def _from_body(request: Request, limit: int) -> bytes:
    chunks = []
    try:
        async for chunk in _capped(request.stream(), limit):
            chunks.append(chunk)
    except _OverLimit:
        raise _over(limit) from None
    return b"".join(chunks)


async def read_upload(request: Request, limit: int) -> bytes:
    """The uploaded file's bytes; 400/413/415 (as GatewayError) for the client's mistakes."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = _declared_length(request)
    if media == "multipart/form-data":
        if length is not None and length > limit + MULTIPART_OVERHEAD:
            raise _over(limit)
        data = await _from_multipart(request, limit)
    elif media.startswith("image/") or media == "application/octet-stream":
        if length is not None and length > limit:
            raise _over(limit)
        data = await _from_body(request, limit)
    elif not media and not length:
        raise bad_request(f"no image in the request; {HOW}")
    else:
        raise unsupported_type(f"Content-Type {media or '(none)'} is not accepted; {HOW}")
    if not data:
        raise bad_request("the uploaded file is empty")
    return data
