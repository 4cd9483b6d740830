"""A job's lifetime in a real gateway process: JOB_TTL_S expiry (the job and its files go), the
job's own budget (JOB_TIMEOUT_S, independent of PREDICTOR_TIMEOUT_S), a backlog of jobs that
does not starve synchronous requests, and the job metrics.

The predictor is tests/slow_predictor.py for both upscale and restore: every call takes
`tile_size` ms. Every time asserted is a ratio of those configured times.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

import httpx
import pytest

from tests.gateway_process import encoded, start_gateway, start_wrong_predictor
from tests.jobs_client import (
    accepted,
    files_of,
    slow_log,
    stored_files,
    stored_jobs,
    submit,
    wait_for,
    wait_until,
)
from tests.servers import free_port
from tests.slow_predictor import start_slow_predictor

TTL_S = 5.0  # JOB_TTL_S
PREDICTOR_TIMEOUT_S = 2.0  # a synchronous request's budget: more than two CALL_MS
JOB_TIMEOUT_S = 6.0  # a job's budget: more than 2 x PREDICTOR_TIMEOUT_S
LEASE_S = 1.5  # JOB_LEASE_S: leases renewed and expired jobs removed every 0.5 s
CONCURRENCY = 3  # JOBS_CONCURRENCY
CALL_MS = 600  # the backlog's calls


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lifetime-slow")
    process, address = start_slow_predictor(tmp / "slow.log")
    yield address, tmp / "slow.log"
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lifetime-data")


@pytest.fixture(scope="module")
def wrong(tmp_path_factory):
    """A face-restore predictor that answers a tensor of the wrong shape (a 500 to the route)."""
    process, address = start_wrong_predictor(
        "face-restore", tmp_path_factory.mktemp("lifetime-wrong") / "wrong.log"
    )
    yield address
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def client(slow, wrong, data_dir, tmp_path_factory):
    closed = f"127.0.0.1:{free_port()}"
    gw = start_gateway(
        {"upscale": slow[0], "restore": slow[0], "face-restore": wrong, "colorize": closed},
        tmp_path_factory.mktemp("lifetime-gateway"),
        env={
            "DATA_DIR": str(data_dir),
            "JOB_TTL_S": str(TTL_S),
            "PREDICTOR_TIMEOUT_S": str(PREDICTOR_TIMEOUT_S),
            "JOB_TIMEOUT_S": str(JOB_TIMEOUT_S),
            "JOB_LEASE_S": str(LEASE_S),
            "JOBS_CONCURRENCY": str(CONCURRENCY),
        },
    )
    with httpx.Client(base_url=gw.url, timeout=120) as c:
        yield c
    gw.stop()


@pytest.fixture(scope="module")
def photo(astronaut) -> bytes:
    return encoded(astronaut[:48, :64])


def test_a_finished_job_expires_with_its_result_and_files(client, photo, data_dir):
    job = accepted(submit(client, "/restore", photo, tile_size=200))
    done = wait_for(client, job, ("succeeded", "failed"))
    assert done["status"] == "succeeded"
    assert f"results/{job['id']}" in stored_files(data_dir)
    assert f"uploads/{job['id']}" not in stored_files(data_dir)  # not kept once it ended
    wait_until(lambda: client.get(job["urls"]["self"]).status_code == 404, within_s=TTL_S * 3)
    assert client.get(job["urls"]["result"]).status_code == 404
    assert client.get(job["urls"]["events"]).status_code == 404

    def forgotten() -> bool:
        files = {name.split("/")[1] for name in stored_files(data_dir)}
        return job["id"] not in files and job["id"] not in dict(stored_jobs(data_dir))

    wait_until(forgotten, within_s=TTL_S)


def test_a_job_has_its_own_budget(client, photo, slow):
    # Longer than a synchronous request may take, shorter than a job may.
    within = int(2 * PREDICTOR_TIMEOUT_S * 1000)
    sync = client.post("/restore", params={"tile_size": within}, files=files_of(photo))
    assert sync.status_code == 504 and "PREDICTOR_TIMEOUT_S" in sync.json()["detail"]
    job = accepted(submit(client, "/restore", photo, tile_size=within))
    done = wait_for(client, job, ("succeeded", "failed"))
    assert done["status"] == "succeeded", done["error"]
    # Longer than the job's budget: it fails with the 504 a request would get, naming the setting.
    cancelled = slow_log(slow, "cancelled")
    too_long = int(3 * JOB_TIMEOUT_S * 1000)
    job = accepted(submit(client, "/restore", photo, tile_size=too_long))
    failed = wait_for(client, job, ("succeeded", "failed"), within_s=too_long / 1000)
    assert failed["status"] == "failed" and failed["error"]["status"] == 504, failed
    assert "JOB_TIMEOUT_S" in failed["error"]["detail"]
    # The predictor saw the deadline and stopped the call.
    wait_until(lambda: slow_log(slow, "cancelled") > cancelled, within_s=JOB_TIMEOUT_S)


def test_a_failing_job_carries_the_status_and_detail_of_the_synchronous_answer(client, photo):
    sync = client.post("/face-restore", files=files_of(photo))
    assert sync.status_code == 500
    job = wait_for(client, accepted(submit(client, "/face-restore", photo)), ("failed",))
    assert job["error"] == {"status": 500, "detail": sync.json()["detail"]}
    result = client.get(job["urls"]["result"])
    assert result.status_code == 409 and "500" in result.json()["detail"]
    assert "retry-after" not in result.headers


def test_a_job_fails_with_503_when_its_predictor_stays_away_for_its_whole_budget(client, photo):
    sync = client.post("/colorize", files=files_of(photo))
    assert sync.status_code == 503
    job = accepted(submit(client, "/colorize", photo))
    failed = wait_for(client, job, ("failed", "succeeded"), within_s=JOB_TIMEOUT_S * 3)
    assert failed["error"] == {"status": 503, "detail": sync.json()["detail"]}
    took = parse(failed["finished_at"]) - parse(failed["started_at"])
    assert JOB_TIMEOUT_S * 0.8 <= took <= JOB_TIMEOUT_S * 1.5, took


def parse(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_a_backlog_of_jobs_does_not_starve_synchronous_requests(client, photo, slow):
    started = slow_log(slow, "start")
    jobs = [
        accepted(submit(client, "/restore", photo, tile_size=CALL_MS)) for _ in range(CONCURRENCY)
    ]
    # All of them are running: one at the predictor, the others waiting for it.
    wait_until(
        lambda: {client.get(j["urls"]["self"]).json()["status"] for j in jobs} == {"running"}, 30
    )
    wait_until(lambda: slow_log(slow, "start") > started, within_s=30)
    start = time.monotonic()
    sync = client.post("/restore", params={"tile_size": CALL_MS}, files=files_of(photo))
    took = time.monotonic() - start
    assert sync.status_code == 200, sync.text
    # Served after the job call already at the predictor, before the waiting ones: at most two
    # calls' time (in arrival order it would be four).
    assert took < 2.5 * CALL_MS / 1000, f"{took:.2f} s for a {CALL_MS} ms call"
    for job in jobs:
        done = wait_for(client, job, ("succeeded", "failed"))
    assert done["status"] == "succeeded", done["error"]


def test_metrics_count_jobs_by_status_and_time_their_wait_and_run(client):
    def value(text: str, name: str, **labels) -> float:
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    text = client.get("/metrics").text
    for status in ("queued", "running", "succeeded", "failed", "canceled"):
        assert re.search(rf'^photo_enhance_jobs{{status="{status}"}} ', text, re.M), status
    assert value(text, "photo_enhance_job_wait_seconds_count", task="restore") >= 1
    assert value(text, "photo_enhance_job_run_seconds_count", task="restore", status="succeeded")
    assert value(text, "photo_enhance_job_run_seconds_count", task="restore", status="failed")
