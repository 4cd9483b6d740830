"""Several gateway replicas on one Redis (JOBS_STORE=redis://) and one results directory
(RESULTS_STORE=file:///DIR on a volume they share): real processes all of them.

- A job submitted to one replica is read, followed (events) and fetched from the other; its
  Idempotency-Key holds across replicas; a cancel made on one stops the work on the other.
- `kill -9` of the replica running a job: the other takes it over once its lease lapses
  (JOB_LEASE_S, then one tick) and finishes it.
- Redis going away mid-job: submissions and reads answer 503 with Retry-After at once (within the
  configured socket timeout); the running job is not lost and ends once Redis is back.

tests/slow_predictor.py is the predictor (each call takes `tile_size` ms); redis-server is the
session's (tests/redis_server.py), each test on a Redis database of its own.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.gateway_process import encoded, start_gateway
from tests.jobs_client import accepted, events, files_of, slow_log, submit, wait_for, wait_until
from tests.slow_predictor import start_slow_predictor

CALL_MS = 3000  # a job's one predictor call
FAST_MS = 128  # the shortest call the routes allow
LEASE_S = 2.0  # JOB_LEASE_S of these gateways: renewed every third of it
STORE_TIMEOUT_S = 1  # the Redis client's socket timeouts (JOBS_STORE=...?socket_timeout=)
KEY = "photo-enhance:{jobs}:job:"


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("redis-slow")
    process, address = start_slow_predictor(tmp / "slow.log")
    yield address, tmp / "slow.log"
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def photo(astronaut) -> bytes:
    return encoded(astronaut[:48, :64])


def store_url(redis_server, db: int) -> str:
    return (
        f"{redis_server.url.rsplit('/', 1)[0]}/{db}"
        f"?socket_timeout={STORE_TIMEOUT_S}&socket_connect_timeout={STORE_TIMEOUT_S}"
    )


def replica(slow, redis_server, db: int, tmp_path):
    """A gateway on Redis database `db` and the results directory every replica shares."""
    return start_gateway(
        {"restore": slow[0], "upscale": slow[0]},
        tmp_path,
        env={
            "JOBS_STORE": store_url(redis_server, db),
            "RESULTS_STORE": f"file://{tmp_path / 'shared-results'}",
            "JOB_LEASE_S": str(LEASE_S),
            "JOBS_CONCURRENCY": "1",
        },
    )


def runs_on(gateways, job: dict):
    """The gateway whose log says it runs the job (now or last)."""
    running = [g for g in gateways if f"job {job['id']}: running here" in g.log()]
    assert len(running) <= 1 or all(g.process.poll() is not None for g in running[:-1])
    return running[-1] if running else None


def test_a_job_is_read_followed_fetched_and_canceled_from_the_other_replica(
    slow, photo, redis_server, tmp_path
):
    a = replica(slow, redis_server, 1, tmp_path)
    b = replica(slow, redis_server, 1, tmp_path)
    try:
        with (
            httpx.Client(base_url=a.url, timeout=60) as on_a,
            httpx.Client(base_url=b.url, timeout=60) as on_b,
        ):
            job = accepted(submit(on_a, "/restore", photo, tile_size=CALL_MS))
            assert on_b.get(job["urls"]["self"]).json()["id"] == job["id"]
            seen = list(events(on_b, job))
            assert [e.name for e in seen][-1] == "done", seen
            assert [int(e.id) for e in seen] == sorted({int(e.id) for e in seen})
            assert seen[-1].job["status"] == "succeeded", seen[-1]
            result = on_b.get(job["urls"]["result"])
            again = on_a.get(job["urls"]["result"])
            sync = on_a.post("/restore", params={"tile_size": 0}, files=files_of(photo))
            assert result.status_code == again.status_code == 200
            assert result.content == again.content == sync.content
            assert result.headers["content-type"] == sync.headers["content-type"]

            # Idempotency-Key: the same job from either replica.
            headers = {"Idempotency-Key": "one-photo"}
            first = accepted(submit(on_a, "/upscale", photo, headers, scale=1, tile_size=FAST_MS))
            second = accepted(submit(on_b, "/upscale", photo, headers, scale=1, tile_size=FAST_MS))
            assert first["id"] == second["id"]

            # A cancel on one replica stops the work wherever it runs, within a lease renewal.
            cancelled = slow_log(slow, "cancelled")
            long = accepted(submit(on_b, "/restore", photo, tile_size=CALL_MS * 100))
            wait_for(on_a, long, "running", within_s=60)
            runner = runs_on((a, b), long)
            other = on_b if runner is a else on_a
            assert other.post(long["urls"]["self"] + "/cancel").json()["status"] == "canceled"
            took = wait_until(lambda: slow_log(slow, "cancelled") > cancelled, within_s=60)
            assert took < LEASE_S * 3, f"the work went on {took:.1f} s after the cancel"
            assert on_a.get(long["urls"]["self"]).json()["status"] == "canceled"
            assert on_b.get(long["urls"]["result"]).status_code == 409
    finally:
        a.stop()
        b.stop()


def test_kill_9_of_the_replica_running_a_job_and_the_other_takes_it_over(
    slow, photo, redis_server, tmp_path
):
    a = replica(slow, redis_server, 2, tmp_path)
    b = replica(slow, redis_server, 2, tmp_path)
    redis = redis_server.client(db=2)
    try:
        with httpx.Client(base_url=a.url, timeout=60) as on_a:
            started = slow_log(slow, "start")
            job = accepted(submit(on_a, "/restore", photo, tile_size=CALL_MS))
            wait_until(lambda: slow_log(slow, "start") > started, within_s=60)
            victim = runs_on((a, b), job)
            survivor = b if victim is a else a
            assert on_a.get(job["urls"]["self"]).json()["status"] == "running"
        victim.process.kill()  # SIGKILL: no clean-up, the lease is left to lapse
        victim.process.wait()
        taken = wait_until(lambda: redis.hget(KEY + job["id"], "attempts") == "2", within_s=60)
        # The lease lapses within LEASE_S, the survivor's next tick (a third of it) requeues the
        # job and wakes its claim loop: well under three leases.
        assert taken < LEASE_S * 3, f"taken over {taken:.1f} s after kill -9"
        assert runs_on((survivor,), job) is survivor
        with httpx.Client(base_url=survivor.url, timeout=60) as on_survivor:
            done = wait_for(on_survivor, job, ("succeeded", "failed"), within_s=60)
            assert done["status"] == "succeeded", done
            assert slow_log(slow, "start") >= started + 2  # the call ran again
            assert on_survivor.get(job["urls"]["result"]).status_code == 200
        assert "queued again" in survivor.log()
    finally:
        a.stop()
        b.stop()


def test_redis_going_away_mid_job_is_a_503_and_the_job_ends_once_it_is_back(
    slow, photo, redis_server, tmp_path
):
    gateway = replica(slow, redis_server, 3, tmp_path)
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            started = slow_log(slow, "start")
            done_before = slow_log(slow, "done")
            job = accepted(submit(client, "/restore", photo, tile_size=CALL_MS))
            wait_until(lambda: slow_log(slow, "start") > started, within_s=60)
            redis_server.pause()
            try:
                asked = time.monotonic()
                refused = submit(client, "/restore", photo, tile_size=FAST_MS)
                took = time.monotonic() - asked
                assert refused.status_code == 503, refused.text
                assert int(refused.headers["retry-after"]) >= 1
                assert "job store" in refused.json()["detail"]
                # One try and one retry on a fresh connection, each at most the socket timeout.
                assert took < STORE_TIMEOUT_S * 2 * 3, f"503 after {took:.1f} s"
                read = client.get(job["urls"]["self"])
                assert read.status_code == 503 and "retry-after" in read.headers
                # The job's call ends while Redis is away: its end waits for Redis.
                wait_until(lambda: slow_log(slow, "done") > done_before, within_s=60)
            finally:
                redis_server.resume()
            done = wait_for(client, job, ("succeeded", "failed"), within_s=60)
            assert done["status"] == "succeeded", done
            assert client.get(job["urls"]["result"]).status_code == 200
            last = list(events(client, job))[-1]
            assert last.name == "done" and last.job["status"] == "succeeded"
            # And submissions work again.
            again = accepted(submit(client, "/restore", photo, tile_size=FAST_MS))
            assert wait_for(client, again, ("succeeded", "failed"))["status"] == "succeeded"
    finally:
        gateway.stop()
