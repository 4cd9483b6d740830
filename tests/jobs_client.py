"""A small client of the gateway's job API for the tests: submit, poll, read server-sent events
(httpx streaming, parsed as EventSource does), and look into the job store's SQLite file."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ASYNC = {"Prefer": "respond-async"}


def files_of(data: bytes, name: str = "photo.png", media: str = "image/png") -> dict:
    return {"file": (name, data, media)}


def submit(client: httpx.Client, route: str, data: bytes, headers=None, **params) -> httpx.Response:
    return client.post(
        route, params=params, files=files_of(data), headers={**ASYNC, **(headers or {})}
    )


def accepted(reply: httpx.Response) -> dict:
    assert reply.status_code == 202, reply.text
    job = reply.json()
    assert reply.headers["location"] == f"/v1/jobs/{job['id']}"
    assert reply.headers["preference-applied"] == "respond-async"
    return job


def wait_for(client: httpx.Client, job: dict, statuses, within_s: float = 120) -> dict:
    """The job once its status is one of `statuses` (polled); fails after within_s."""
    statuses = {statuses} if isinstance(statuses, str) else set(statuses)
    deadline = time.monotonic() + within_s
    while True:
        reply = client.get(job["urls"]["self"])
        assert reply.status_code == 200, reply.text
        current = reply.json()
        if current["status"] in statuses:
            return current
        assert time.monotonic() < deadline, f"job still {current['status']}: {current}"
        time.sleep(0.05)


@dataclass
class Event:
    id: str | None
    name: str
    job: dict


def events(
    client: httpx.Client, job: dict, last_event_id: str | None = None, timeout: float = 120
) -> Iterator[Event]:
    """The job's server-sent events until the server ends the stream."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    with client.stream("GET", job["urls"]["events"], headers=headers, timeout=timeout) as reply:
        assert reply.status_code == 200, reply.read()
        assert reply.headers["content-type"].startswith("text/event-stream")
        event_id, name, data = None, "message", []
        for line in reply.iter_lines():
            if not line:
                if data:
                    yield Event(event_id, name, json.loads("\n".join(data)))
                event_id, name, data = None, "message", []
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "id":
                    event_id = value
                elif field == "event":
                    name = value
                elif field == "data":
                    data.append(value)


def stored_jobs(data_dir: Path) -> list[tuple[str, str]]:
    """(id, status) of every row in the gateway's SQLite job store."""
    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        return db.execute("SELECT id, status FROM jobs").fetchall()


def stored_files(data_dir: Path) -> set[str]:
    """The uploads/ and results/ files of the gateway's job files, as 'kind/name'."""
    root = data_dir / "files"
    return {f"{p.parent.name}/{p.name}" for p in root.glob("*/*")}


def wait_until(condition, within_s: float, step_s: float = 0.02) -> float:
    """Seconds until condition() held; fails after within_s."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < within_s, "condition not met in time"
        time.sleep(step_s)
    return time.monotonic() - start


def slow_log(slow, word: str) -> int:
    """Lines of the slow predictor's log (slow = (address, log path)) that start with `word`."""
    return sum(line.startswith(word) for line in slow[1].read_text().splitlines())
