"""Photos as jobs on the gateway (CONTRACT section 6): submitted with `Prefer: respond-async`,
followed until they end, their results read from /v1/jobs/{id}/result.

Each job's id is kept in a small ledger beside the outputs (LEDGER in the output folder) before
the run waits for it, so a run that was interrupted (Ctrl-C, a closed terminal, a lost network)
and started again follows the same jobs instead of sending the photos again; the ledger is
removed once none of its jobs is left. The submission also carries an Idempotency-Key kept in
the ledger first, so a run stopped between sending a photo and reading its job's id still gets
that job back. A gateway without jobs answers the image at once (no 202): that answer is
written as the synchronous client does; a job the gateway no longer knows (404: expired, or a
gateway without jobs) is submitted again. When /health says a model the task needs is not
ready, the photos are sent synchronously: the gateway's 503 and Retry-After are retried as
before, instead of jobs that would wait for the model.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from .inputs import Job
from .send import (
    RETRIED_ERRORS,
    Outcome,
    Policy,
    backoff,
    detail_of,
    post,
    process,
    write_result,
)

LEDGER = ".photo-enhance-jobs.json"
ASYNC = {"Prefer": "respond-async"}
POLL_S = 0.5
FINISHED = ("succeeded", "failed", "canceled")


class Stopped(Exception):
    """The run was interrupted: the job goes on on the server, its id stays in the ledger."""


class Ledger:
    """{target path: {id, key, source, route, params}} in LEDGER in `folder`, thread-safe."""

    def __init__(self, folder: Path):
        self.path = folder / LEDGER
        self._made_folder = False  # removed again when the ledger empties and it holds nothing
        self._lock = threading.Lock()
        try:
            self.entries: dict[str, dict] = json.loads(self.path.read_text()).get("jobs", {})
        except (OSError, ValueError, AttributeError):
            self.entries = {}

    def get(self, job: Job, route: str, params: dict[str, str]) -> dict | None:
        entry = self.entries.get(str(job.target))
        same = entry and (entry.get("source"), entry.get("route"), entry.get("params")) == (
            str(job.source),
            route,
            params,
        )
        return entry if same else None

    def put(self, job: Job, entry: dict) -> None:
        with self._lock:
            self.entries[str(job.target)] = entry
            self._save()

    def drop(self, job: Job) -> None:
        with self._lock:
            if self.entries.pop(str(job.target), None) is not None:
                self._save()

    def forget_unsent(self) -> None:
        """Drop the entries that never got a job id: after the gateway refused the options, no
        job was made from their keys."""
        with self._lock:
            self.entries = {k: e for k, e in self.entries.items() if e.get("id")}
            self._save()

    def _save(self) -> None:
        if not self.entries:
            self.path.unlink(missing_ok=True)
            if self._made_folder:
                with contextlib.suppress(OSError):  # not empty: results were written there
                    self.path.parent.rmdir()
            return
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True)
            self._made_folder = True
        fd, part = tempfile.mkstemp(prefix=f"{LEDGER}.", dir=self.path.parent)
        with os.fdopen(fd, "w") as out:
            json.dump({"jobs": self.entries}, out, indent=1)
        os.replace(part, self.path)


def ledger_folder(jobs: list[Job]) -> Path:
    """The output folder: the common folder of every target."""
    return Path(os.path.commonpath([str(j.target.parent) for j in jobs if j.target]))


class Follow:
    """One photo's job from submission to its written result. `show(job, done, total, stage)`
    is told of each change; `say` prints a line."""

    def __init__(
        self,
        client: httpx.Client,
        route: str,
        params: dict[str, str],
        policy: Policy,
        ledger: Ledger,
        stop: threading.Event,
        say: Callable[[str], None],
        show: Callable[[Job, dict], None],
        use_jobs: bool = True,
    ):
        self.client, self.route, self.params, self.policy = client, route, params, policy
        self.ledger, self.stop, self.say, self.show = ledger, stop, say, show
        self.use_jobs = use_jobs

    def __call__(self, job: Job) -> Outcome:
        start = time.monotonic()
        try:
            return self._run(job, start)
        except Stopped:
            return Outcome(job, "failed", "interrupted; the job goes on on the server")

    def _run(self, job: Job, start: float) -> Outcome:
        if self.stop.is_set():  # the run stopped before this photo's turn: nothing is sent
            raise Stopped()
        if not self.use_jobs:
            return process(self.client, self.route, self.params, job, self.policy, self.say)
        entry = self.ledger.get(job, self.route, self.params)
        if entry and entry.get("id"):
            current = self._get(job, entry["id"])
            if current is not None:
                self.say(f"resume {job.source}: job {entry['id']} ({current['status']})")
                return self._follow(job, current, start)
            self.say(f"gone   {job.source}: job {entry['id']} is no longer on the server")
            entry = None
        if entry is None:
            entry = {
                "key": uuid.uuid4().hex,
                "source": str(job.source),
                "route": self.route,
                "params": self.params,
            }
            self.ledger.put(job, entry)
        headers = {**ASYNC, "Idempotency-Key": entry["key"]}
        reply = post(self.client, self.route, self.params, job, self.policy, self.say, headers)
        if isinstance(reply, Outcome):
            self.ledger.drop(job)
            return reply
        if reply.status_code == 200:  # a gateway without jobs: the answer is the image
            self.ledger.drop(job)
            return write_result(job, reply.content, start)
        current = reply.json()
        self.ledger.put(job, {**entry, "id": current["id"]})
        self.say(f"job    {job.source}: {current['id']}")
        return self._follow(job, current, start)

    def _get(self, job: Job, job_id: str, tail: str = "") -> dict | None:
        """The job (None: 404), retrying lost connections with backoff."""
        attempt = 0
        while True:
            if self.stop.is_set():
                raise Stopped
            attempt += 1
            try:
                reply = self.client.get(f"/v1/jobs/{job_id}{tail}")
            except RETRIED_ERRORS as exc:
                if attempt > self.policy.retries:
                    raise
                wait = min(backoff(attempt), self.policy.max_wait_s)
                self.say(f"retry  {job.source}: cannot reach the gateway ({exc}); in {wait:g} s")
                self.stop.wait(wait)
                continue
            if reply.status_code == 404:
                return None
            reply.raise_for_status()
            return reply.json()

    def _follow(self, job: Job, current: dict, start: float) -> Outcome:
        try:
            while current["status"] not in FINISHED:
                self.show(job, current)
                if self.stop.wait(POLL_S):
                    raise Stopped
                current = self._get(job, current["id"])
                if current is None:
                    self.ledger.drop(job)
                    return Outcome(job, "failed", "the job is gone from the server (expired?)")
            self.show(job, current)
        except (httpx.HTTPError, ValueError) as exc:
            return Outcome(job, "failed", f"following its job: {type(exc).__name__}: {exc}")
        job_id = current["id"]
        if current["status"] == "succeeded":
            try:
                reply = self.client.get(f"/v1/jobs/{job_id}/result")
            except httpx.HTTPError as exc:
                return Outcome(job, "failed", f"reading its result: {type(exc).__name__}: {exc}")
            if reply.status_code != 200:
                self.ledger.drop(job)
                return Outcome(job, "failed", f"result: HTTP {reply.status_code}: "
                               f"{detail_of(reply)}")  # fmt: skip
            outcome = write_result(job, reply.content, start)
        elif current["status"] == "canceled":
            outcome = Outcome(job, "failed", f"job {job_id} was canceled on the server")
        else:
            error = current.get("error") or {}
            outcome = Outcome(
                job, "failed", f"HTTP {error.get('status')}: {error.get('detail')}",
                time.monotonic() - start, error.get("status") == 422,
            )  # fmt: skip
        self.ledger.drop(job)
        return outcome


# The models each task needs; the pipeline's steps switched off by their option are left out.
TASK_MODELS = {
    "colorize": ["colorize"],
    "restore": ["restore"],
    "face-restore": ["face-restore"],
    "upscale": ["upscale"],
}
PIPELINE_STEPS = {"colorize": "colorize", "restore": "restore", "upscale": "upscale",
                  "face_restore": "face-restore"}  # fmt: skip


def not_ready(client: httpx.Client, task: str, params: dict[str, str]) -> list[str]:
    """The models `task` needs that /health reports as not ready ([] when /health fails)."""
    if task == "pipeline":
        needed = [m for p, m in PIPELINE_STEPS.items() if params.get(p, "true") != "false"]
    else:
        needed = TASK_MODELS.get(task, [])
    try:
        models = client.get("/health", timeout=10).json().get("models", {})
    except (httpx.HTTPError, ValueError, AttributeError):
        return []
    return [m for m in needed if m in models and not models[m].get("ready")]
