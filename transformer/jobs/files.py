"""A job's upload and result as files (RESULTS_STORE=file:///DIR): DIR/uploads/ID and
DIR/results/ID (s3_files.py: the same in a bucket, RESULTS_STORE=s3://...). The upload is
written when the job is accepted, so queued jobs hold no memory; the result is written once and
served from disk (never kept in memory beyond one request).

Writes go to a temporary name, are flushed to disk (fsync) and then renamed, so a file under its
final name is always whole, also after a crash. All file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from fastapi.responses import FileResponse, Response

from ..errors import GatewayError

UPLOADS, RESULTS = "uploads", "results"


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


class FileStore:
    def __init__(self, root: Path):
        self.root = root

    def path(self, kind: str, job_id: str) -> Path:
        return self.root / kind / job_id

    @property
    def description(self) -> str:
        return f"file://{self.root}"

    def _open(self) -> None:
        for kind in (UPLOADS, RESULTS):
            (self.root / kind).mkdir(parents=True, exist_ok=True)

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    async def put(self, kind: str, job_id: str, data: bytes) -> None:
        await asyncio.to_thread(_write, self.path(kind, job_id), data)

    async def read(self, kind: str, job_id: str) -> bytes:
        return await asyncio.to_thread(self.path(kind, job_id).read_bytes)

    async def exists(self, kind: str, job_id: str) -> bool:
        return await asyncio.to_thread(self.path(kind, job_id).is_file)

    async def response(
        self, kind: str, job_id: str, media_type: str | None, headers: dict[str, str]
    ) -> Response:
        """The file as an answer, read from disk as it is sent."""
        if not await self.exists(kind, job_id):
            raise GatewayError(404, f"the result of job {job_id} is gone (JOB_TTL_S)")
        return FileResponse(self.path(kind, job_id), media_type=media_type, headers=headers)

    async def remove(self, kind: str, job_id: str) -> None:
        def unlink() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.path(kind, job_id).unlink()

        await asyncio.to_thread(unlink)

    async def ids(self, older_than_s: float) -> set[str]:
        """The job ids with a file (temporary ones too) last written over older_than_s ago."""

        def names() -> set[str]:
            found = set()
            before = time.time() - older_than_s
            for kind in (UPLOADS, RESULTS):
                for entry in os.scandir(self.root / kind):
                    name = entry.name
                    if name.startswith(".") and name.endswith(".tmp"):
                        name = name[1:-4]
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_mtime < before:
                            found.add(name)
            return found

        return await asyncio.to_thread(names)

    async def remove_all(self, job_id: str) -> None:
        """Every file of the job, temporary ones too."""

        def unlink() -> None:
            for kind in (UPLOADS, RESULTS):
                for name in (job_id, f".{job_id}.tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        (self.root / kind / name).unlink()

        await asyncio.to_thread(unlink)


def open_files(settings: Any) -> Any:
    """The files store RESULTS_STORE names (settings: JobSettings): a directory or a bucket."""
    if settings.results_s3 is not None:
        from .s3_files import S3FileStore

        return S3FileStore(settings.results_s3, settings.results_presigned_s)
    return FileStore(settings.files_dir)
