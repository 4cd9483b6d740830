"""An accepted job is never lost: it ends once a gateway runs again on the same job store.

Real processes: tests/slow_predictor.py (every call takes `tile_size` ms) and gateways one after
the other on one DATA_DIR (the SQLite store and the job files).
- `kill -9` mid-job: the running job is run again once its lease lapses (at least once), the
  queued one runs, both succeed.
- SIGTERM mid-job: the event stream ends at once (not after the server's grace period), the
  gateway puts its running job back in the queue, and the next gateway runs it without waiting
  for a lease; the client's stream resumes there with Last-Event-ID.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.gateway_process import encoded, start_gateway
from tests.jobs_client import (
    accepted,
    events,
    files_of,
    slow_log,
    stored_jobs,
    submit,
    wait_for,
    wait_until,
)
from tests.slow_predictor import start_slow_predictor

CALL_MS = 3000  # the job that is running when its gateway goes
STEP_MS = 300  # the job queued behind it


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("restart-slow")
    process, address = start_slow_predictor(tmp / "slow.log")
    yield address, tmp / "slow.log"
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def photo(astronaut) -> bytes:
    return encoded(astronaut[:48, :64])


def gateway(slow, data_dir, tmp, lease_s: float):
    return start_gateway(
        {"restore": slow[0], "upscale": slow[0]},
        tmp,
        env={"DATA_DIR": str(data_dir), "JOB_LEASE_S": str(lease_s), "JOBS_CONCURRENCY": "1"},
    )


def test_kill_9_mid_job_and_a_restart_ends_every_job(slow, photo, tmp_path):
    lease_s = 2.0
    first = gateway(slow, tmp_path / "data", tmp_path, lease_s)
    try:
        with httpx.Client(base_url=first.url, timeout=60) as client:
            started = slow_log(slow, "start")
            running = accepted(submit(client, "/restore", photo, tile_size=CALL_MS))
            queued = accepted(submit(client, "/upscale", photo, scale=1, tile_size=STEP_MS))
            wait_until(lambda: slow_log(slow, "start") > started, within_s=60)
            assert client.get(running["urls"]["self"]).json()["status"] == "running"
            assert client.get(queued["urls"]["self"]).json()["status"] == "queued"
    finally:
        first.process.kill()  # SIGKILL: no clean-up at all
        first.process.wait()
    assert dict(stored_jobs(tmp_path / "data")) == {
        running["id"]: "running",
        queued["id"]: "queued",
    }

    second = gateway(slow, tmp_path / "data", tmp_path, lease_s)
    try:
        with httpx.Client(base_url=second.url, timeout=60) as client:
            within = lease_s * 3 + (CALL_MS + STEP_MS) / 1000 * 3
            again = wait_for(client, running, ("succeeded", "failed"), within_s=60 + within)
            assert again["status"] == "succeeded", again
            assert again["started_at"] > running["created_at"]
            done = wait_for(client, queued, ("succeeded", "failed"), within_s=60 + within)
            assert done["status"] == "succeeded", done
            assert slow_log(slow, "start") >= started + 3  # the running job's call ran twice
            result = client.get(running["urls"]["result"])
            sync = client.post("/restore", params={"tile_size": STEP_MS}, files=files_of(photo))
            assert result.status_code == 200 and result.content == sync.content
            assert "queued again" in second.log()
    finally:
        second.stop()


def test_sigterm_mid_job_requeues_it_and_its_events_resume_on_the_next_gateway(
    slow, photo, tmp_path
):
    lease_s = 120.0  # longer than the test: the next gateway must not wait for it
    first = gateway(slow, tmp_path / "data", tmp_path, lease_s)
    try:
        with httpx.Client(base_url=first.url, timeout=60) as client:
            started = slow_log(slow, "start")
            job = accepted(submit(client, "/restore", photo, tile_size=CALL_MS))
            wait_until(lambda: slow_log(slow, "start") > started, within_s=60)
            seen = None
            stream = events(client, job)
            for event in stream:
                seen = event
                if event.job["status"] == "running":
                    break
            stopping = time.monotonic()
            first.process.send_signal(signal.SIGTERM)
            after = list(stream)  # until the gateway ends the stream
            ended = time.monotonic() - stopping
            assert all(e.name == "progress" for e in after), after
            seen = after[-1] if after else seen
        first.process.wait(30)
        stopped = time.monotonic() - stopping
    finally:
        first.stop()
    # Not the server's 30 s grace period for open streams, nor the job's whole call.
    assert ended < CALL_MS / 1000, f"the event stream ended {ended:.1f} s after SIGTERM"
    assert stopped < CALL_MS / 1000 + 5, f"the gateway stopped {stopped:.1f} s after SIGTERM"
    assert dict(stored_jobs(tmp_path / "data")) == {job["id"]: "queued"}

    second = gateway(slow, tmp_path / "data", tmp_path, lease_s)
    try:
        with httpx.Client(base_url=second.url, timeout=60) as client:
            rest = list(events(client, job, last_event_id=seen.id, timeout=lease_s / 2))
            assert int(rest[0].id) > int(seen.id)
            assert rest[-1].name == "done" and rest[-1].job["status"] == "succeeded", rest[-1]
            assert rest[-1].job["progress"]["done"] == rest[-1].job["progress"]["total"]
    finally:
        second.stop()
