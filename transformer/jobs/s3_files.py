"""A job's upload and result in an S3-compatible bucket (RESULTS_STORE=s3://BUCKET[/PREFIX]):
objects PREFIX/uploads/ID and PREFIX/results/ID, shared by every gateway replica (an upload
taken by one replica is run by another; a result made by one is served by any).

The same operations as files.FileStore, through boto3 (its calls run in threads). A result is
served streamed, a chunk at a time, never held whole in the gateway's memory; or, with
RESULTS_PRESIGNED_S, as a 307 to a presigned URL (the client then fetches it from the bucket
itself). A bucket that does not answer or refuses raises StoreUnavailable (503 with Retry-After
and what the bucket said): a submission is refused, a result read fails, a job whose result
cannot be written fails with that reason. Expiry deletes the objects with the job (JOB_TTL_S);
a bucket lifecycle rule on PREFIX is a fine second guard for objects left by a lost bucket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from ..errors import GatewayError
from .config import S3Location
from .files import RESULTS, UPLOADS
from .store import StoreUnavailable

logger = logging.getLogger("transformer.jobs")

CHUNK = 1 << 20  # a streamed result is read from the bucket this much at a time
MISSING = ("NoSuchKey", "404", "NotFound")
CONFIG = Config(
    connect_timeout=5,
    read_timeout=30,
    retries={"max_attempts": 3, "mode": "standard"},  # two retries, with backoff
    max_pool_connections=32,
    signature_version="s3v4",
)


class S3FileStore:
    def __init__(self, where: S3Location, presigned_s: float = 0.0):
        self.where = where
        self.presigned_s = presigned_s
        # Path-style addressing for an endpoint of our own (MinIO, Ceph, moto: no DNS per bucket).
        style = "path" if where.endpoint_url else "auto"
        self._s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=where.endpoint_url,
            config=CONFIG.merge(Config(s3={"addressing_style": style})),
        )

    @property
    def description(self) -> str:
        at = f" at {self.where.endpoint_url}" if self.where.endpoint_url else ""
        return f"{self.where.url}{at}"

    def key(self, kind: str, job_id: str) -> str:
        return f"{self.where.prefix}{kind}/{job_id}"

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            said = f"refuses: {error.get('Code')} {error.get('Message', '')}".strip()
        else:
            said = f"does not answer: {exc}"
        return StoreUnavailable(f"the results store ({self.description}) {said}")

    async def _call(self, method: str, **params: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self._s3, method), **params)
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(exc) from exc

    async def _get(self, kind: str, job_id: str) -> Any | None:
        """get_object's answer (its Body not read yet), or None when there is no such object."""
        try:
            return await self._call(
                "get_object", Bucket=self.where.bucket, Key=self.key(kind, job_id)
            )
        except StoreUnavailable as exc:
            if _missing(exc):
                return None
            raise

    async def open(self) -> None:
        """Fail at start, saying why, when the bucket cannot be reached or is not ours."""
        try:
            await self._call("head_bucket", Bucket=self.where.bucket)
        except StoreUnavailable as exc:
            raise RuntimeError(f"RESULTS_STORE={self.where.url}: {exc.detail}") from None

    async def put(self, kind: str, job_id: str, data: bytes) -> None:
        await self._call(
            "put_object", Bucket=self.where.bucket, Key=self.key(kind, job_id), Body=data
        )

    async def read(self, kind: str, job_id: str) -> bytes:
        answer = await self._get(kind, job_id)
        if answer is None:
            raise FileNotFoundError(self.key(kind, job_id))
        body = answer["Body"]
        try:
            return await asyncio.to_thread(body.read)
        except BotoCoreError as exc:
            raise self._unavailable(exc) from exc
        finally:
            body.close()

    async def response(
        self, kind: str, job_id: str, media_type: str | None, headers: dict[str, str]
    ) -> Response:
        """The object as an answer: streamed from the bucket, or a 307 to a presigned URL."""
        if self.presigned_s:
            return await self._redirect(kind, job_id, media_type, headers)
        answer = await self._get(kind, job_id)
        if answer is None:
            raise GatewayError(404, f"the result of job {job_id} is gone (JOB_TTL_S)")
        body = answer["Body"]

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while chunk := await asyncio.to_thread(body.read, CHUNK):
                    yield chunk
            finally:
                body.close()

        length = {"Content-Length": str(answer["ContentLength"])}
        return StreamingResponse(chunks(), media_type=media_type, headers={**headers, **length})

    async def _redirect(
        self, kind: str, job_id: str, media_type: str | None, headers: dict[str, str]
    ) -> Response:
        key = self.key(kind, job_id)
        try:
            await self._call("head_object", Bucket=self.where.bucket, Key=key)
        except StoreUnavailable as exc:
            if _missing(exc):
                raise GatewayError(404, f"the result of job {job_id} is gone (JOB_TTL_S)") from None
            raise
        params = {"Bucket": self.where.bucket, "Key": key}
        if media_type:
            params["ResponseContentType"] = media_type
        url = await self._call(
            "generate_presigned_url",
            ClientMethod="get_object",
            Params=params,
            ExpiresIn=int(self.presigned_s),
        )
        return RedirectResponse(url, status_code=307, headers=headers)

    async def remove(self, kind: str, job_id: str) -> None:
        await self._call("delete_object", Bucket=self.where.bucket, Key=self.key(kind, job_id))

    async def remove_all(self, job_id: str) -> None:
        objects = [{"Key": self.key(kind, job_id)} for kind in (UPLOADS, RESULTS)]
        await self._call(
            "delete_objects", Bucket=self.where.bucket, Delete={"Objects": objects, "Quiet": True}
        )

    async def ids(self, older_than_s: float) -> set[str]:
        """The job ids with an object last written over older_than_s ago."""

        def names() -> set[str]:
            before = datetime.now(UTC).timestamp() - older_than_s
            found = set()
            pages = self._s3.get_paginator("list_objects_v2")
            for kind in (UPLOADS, RESULTS):
                prefix = f"{self.where.prefix}{kind}/"
                for page in pages.paginate(Bucket=self.where.bucket, Prefix=prefix):
                    for obj in page.get("Contents", []):
                        if obj["LastModified"].timestamp() < before:
                            found.add(obj["Key"].removeprefix(prefix))
            return found

        try:
            return await asyncio.to_thread(names)
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(exc) from exc


def _missing(exc: StoreUnavailable) -> bool:
    cause = exc.__cause__
    return isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in MISSING
