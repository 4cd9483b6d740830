"""The job stores, as the runner and the API use them: claims, leases, conditional finishes,
idempotency keys, the queue limit, expiry, and a second store on the same data (another gateway
process or replica) seeing the first one's jobs. Every contract test runs on both stores: the
embedded one (an SQLite file) and the shared one (a real redis-server, tests/redis_server.py).
Then the job files and the settings."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from transformer.jobs.config import JobSettings
from transformer.jobs.files import RESULTS, UPLOADS, FileStore
from transformer.jobs.model import Job
from transformer.jobs.redis_store import RedisJobStore
from transformer.jobs.sqlite import SqliteJobStore
from transformer.jobs.store import JobStore, QueueFull, StoreUnavailable, open_store, redacted


def run(coro, within_s: float = 120):
    """The scenario, failed (not hung) if a store call never returns."""
    return asyncio.run(asyncio.wait_for(coro, within_s))


@pytest.fixture(params=["sqlite", "redis"])
def opened(request, tmp_path):
    """`await opened()`: a new store on this test's data (each call another process's view)."""
    if request.param == "sqlite":

        async def sqlite() -> JobStore:
            store = SqliteJobStore(tmp_path / "jobs.db")
            await store.open()
            return store

        return sqlite
    server = request.getfixturevalue("redis_server")
    prefix = f"test-{uuid.uuid4().hex}:{{jobs}}:"  # this test's own keys

    async def redis() -> JobStore:
        store = RedisJobStore(server.url, prefix=prefix)
        await store.open()
        return store

    return redis


def test_a_job_goes_queued_running_succeeded_with_one_owner(opened):
    async def scenario():
        store = await opened()
        job, created = await store.add(Job.new("restore", {"tile_size": 0}), max_queued=10)
        assert created and job.status == "queued"
        claimed = await store.claim("runner-a", lease_s=30)
        assert claimed.id == job.id and claimed.status == "running" and claimed.attempts == 1
        assert await store.claim("runner-b", lease_s=30) is None  # nothing else queued
        assert await store.set_progress(job.id, "runner-a", 10, 1000, "restore: tile 1 of 100")
        assert not await store.set_progress(job.id, "runner-b", 20, 1000, "not the owner")
        assert await store.finish(job.id, "runner-b", "succeeded", 60, progress=(1, 1, "")) is None
        done = await store.finish(
            job.id, "runner-a", "succeeded", 60, progress=(1000, 1000, "done"),
            result={"media_type": "image/png", "headers": {"X-Steps": "restore"}},
        )  # fmt: skip
        assert done.status == "succeeded" and done.result["headers"] == {"X-Steps": "restore"}
        assert done.version > claimed.version > job.version
        assert done.expires_at == pytest.approx(done.finished_at + 60)
        assert await store.counts() == {"succeeded": 1}
        await store.close()

    run(scenario())


def test_idempotency_key_and_queue_limit(opened):
    async def scenario():
        store = await opened()
        first, created = await store.add(Job.new("upscale", {}, "key-1"), max_queued=2)
        again, created_again = await store.add(Job.new("upscale", {}, "key-1"), max_queued=2)
        assert created and not created_again and again.id == first.id
        assert (await store.by_key("key-1")).id == first.id
        await store.add(Job.new("upscale", {}), max_queued=2)
        with pytest.raises(QueueFull) as full:
            await store.add(Job.new("upscale", {}), max_queued=2)
        assert full.value.queued == 2
        # A full queue still answers a repeated key with its job.
        assert (await store.add(Job.new("upscale", {}, "key-1"), max_queued=2))[0].id == first.id
        await store.close()

    run(scenario())


def test_cancel_and_release_and_a_lapsed_lease(opened):
    async def scenario():
        store = await opened()
        queued, _ = await store.add(Job.new("restore", {}), 10)
        canceled = await store.cancel(queued.id, ttl_s=60)
        assert canceled.status == "canceled" and canceled.finished_at is not None
        assert (await store.cancel(queued.id, ttl_s=60)).version == canceled.version  # no-op

        job, _ = await store.add(Job.new("restore", {}), 10)
        await store.claim("stopping", lease_s=30)
        assert await store.release(job.id, "stopping")
        released = await store.get(job.id)
        assert released.status == "queued" and released.attempts == 0

        await store.claim("dies", lease_s=0.05)
        assert await store.renew("other", 30) == set()
        await asyncio.sleep(0.1)
        assert await store.recover(max_attempts=2, ttl_s=60) == ([job.id], [])
        assert (await store.claim("second", lease_s=0.05)).attempts == 2
        await asyncio.sleep(0.1)
        assert await store.recover(max_attempts=2, ttl_s=60) == ([], [job.id])
        failed = await store.get(job.id)
        assert failed.status == "failed" and failed.error["status"] == 500
        assert "JOB_MAX_ATTEMPTS" in failed.error["detail"]
        await store.close()

    run(scenario())


def test_expired_jobs_are_gone_and_their_key_free(opened):
    async def scenario():
        store = await opened()
        job, _ = await store.add(Job.new("restore", {}, "key"), 10)
        await store.claim("a", 30)
        await store.finish(job.id, "a", "failed", 0.05, progress=(0, 1000, "failed"))
        await asyncio.sleep(0.1)
        assert await store.get(job.id) is None and await store.by_key("key") is None
        assert await store.expired() == [job.id]
        fresh, created = await store.add(Job.new("restore", {}, "key"), 10)
        assert created and fresh.id != job.id
        assert await store.delete(job.id) and await store.ids() == {fresh.id}
        await store.close()

    run(scenario())


def test_two_stores_on_one_file_share_the_jobs_and_wait_sees_the_other(opened):
    async def scenario():
        here, there = await opened(), await opened()
        job, _ = await here.add(Job.new("restore", {}), 10)
        claimed = await there.claim("there", 30)
        assert claimed.id == job.id and await here.claim("here", 30) is None
        start = time.monotonic()
        waiting = asyncio.create_task(here.wait(job.id, claimed.version, timeout=30))
        await there.set_progress(job.id, "there", 500, 1000, "half")
        seen = await waiting
        assert seen.done == 500 and time.monotonic() - start < 30
        await here.close()
        await there.close()

    run(scenario())


def test_files_are_written_whole_and_removed(tmp_path):
    async def scenario():
        files = FileStore(tmp_path / "files")
        await files.open()
        await files.put(UPLOADS, "abc", b"photo")
        await files.put(RESULTS, "abc", b"answer")
        assert await files.read(UPLOADS, "abc") == b"photo"
        assert await files.ids(older_than_s=-1) == {"abc"}
        assert await files.ids(older_than_s=3600) == set()
        await files.remove_all("abc")
        assert not await files.exists(RESULTS, "abc") and await files.ids(-1) == set()

    run(scenario())


def test_settings_urls_and_mistakes(tmp_path):
    settings = JobSettings.from_env({"DATA_DIR": str(tmp_path)})
    assert settings.store_path == tmp_path / "jobs.sqlite3"
    assert settings.files_dir == tmp_path / "files"
    settings = JobSettings.from_env(
        {"JOBS_STORE": "sqlite:///var/lib/jobs.db", "RESULTS_STORE": "file:///srv/results"}
    )
    assert str(settings.store_path) == "/var/lib/jobs.db"
    assert str(settings.files_dir) == "/srv/results"
    settings = JobSettings.from_env({"JOBS_STORE": "redis://:secret@redis.jobs:6379/2"})
    assert settings.store_path is None and settings.store_url.endswith("6379/2")
    assert "secret" not in redacted(settings.store_url)
    assert isinstance(open_store(settings), RedisJobStore)
    settings = JobSettings.from_env(
        {"RESULTS_STORE": "s3://photo-results/jobs/eu", "AWS_ENDPOINT_URL": "http://minio:9000"}
    )
    assert settings.files_dir is None and settings.results_s3.url == "s3://photo-results/jobs/eu/"
    assert settings.results_s3.endpoint_url == "http://minio:9000"
    for env, words in (
        ({"JOBS_STORE": "redis:///6379"}, "redis://HOST"),
        ({"JOBS_STORE": "postgres://db/jobs"}, "sqlite:///ABSOLUTE/PATH .* or redis://"),
        ({"RESULTS_STORE": "s3://Bad_Bucket/prefix"}, "s3://BUCKET"),
        ({"RESULTS_STORE": "gs://bucket/prefix"}, "file:///ABSOLUTE/PATH or s3://"),
        ({"RESULTS_PRESIGNED_S": "60"}, "needs RESULTS_STORE=s3://"),
        ({"JOBS_STORE": "jobs.db"}, "sqlite:///"),
        ({"MAX_JOBS_QUEUED": "0"}, ">= 1"),
        ({"JOB_TTL_S": "soon"}, "number"),
    ):
        with pytest.raises(ValueError, match=words):
            JobSettings.from_env(env)


def test_a_redis_that_does_not_answer_is_a_503_and_changes_nothing(redis_server):
    async def scenario():
        store = RedisJobStore(redis_server.url, prefix=f"test-{uuid.uuid4().hex}:{{jobs}}:")
        await store.open()
        job, _ = await store.add(Job.new("restore", {}), 10)
        store._redis.connection_pool.connection_kwargs["socket_timeout"] = 0.5
        await store._redis.connection_pool.disconnect()
        redis_server.pause()
        try:
            with pytest.raises(StoreUnavailable) as unavailable:
                await store.add(Job.new("restore", {}), 10)
            assert unavailable.value.status == 503 and "Retry-After" in unavailable.value.headers
            assert "does not answer" in unavailable.value.detail
        finally:
            redis_server.resume()
        assert await store.ids() == {job.id}
        await store.close()

    run(scenario())


def test_a_webhook_is_due_when_its_job_ends_and_held_while_it_is_delivered(opened):
    async def scenario():
        store, other = await opened(), await opened()
        job, _ = await store.add(Job.new("upscale", {}, webhook="https://example.com/"), 10)
        quiet, _ = await store.add(Job.new("upscale", {}), 10)
        assert await store.claim_webhook(time.time(), 30) == (None, None)  # not ended yet
        await store.claim("a", 30)
        await store.claim("a", 30)
        for ended in (job, quiet):
            await store.finish(ended.id, "a", "succeeded", 60, progress=(1, 1, "done"))
        due, _ = await other.claim_webhook(time.time(), 30)  # any replica may deliver it
        assert due.id == job.id and due.webhook_attempts == 1 and due.webhook_state == "pending"
        again, next_at = await store.claim_webhook(time.time(), 30)
        assert again is None and next_at > time.time() + 20  # held while its attempt runs
        await other.set_webhook(job.id, "pending", time.time() + 0.2)  # failed: retried soon
        assert (await store.claim_webhook(time.time(), 30))[0] is None
        await asyncio.sleep(0.3)
        retried, _ = await store.claim_webhook(time.time(), 30)
        assert retried.id == job.id and retried.webhook_attempts == 2
        await store.set_webhook(job.id, "delivered", None)
        assert await other.claim_webhook(time.time(), 30) == (None, None)
        assert (await other.get(job.id)).webhook_state == "delivered"
        # A canceled job's webhook is due too; a deleted job's is gone with it.
        canceled, _ = await store.add(Job.new("upscale", {}, webhook="https://example.com/"), 10)
        await store.cancel(canceled.id, 60)
        await store.delete(canceled.id)
        await store.set_webhook(canceled.id, "pending", time.time())  # a late deliverer
        assert await other.claim_webhook(time.time(), 30) == (None, None)
        assert await store.get(canceled.id) is None
        await store.close()
        await other.close()

    run(scenario())
