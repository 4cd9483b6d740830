"""Job uploads and results in an S3-compatible bucket (RESULTS_STORE=s3://BUCKET/PREFIX): moto's
S3 in server mode on 127.0.0.1 (a real HTTP endpoint), real gateway processes, and
tests/slow_predictor.py as the predictor (each call takes `tile_size` ms).

- A job's upload and result are objects in the bucket, none on the gateway's disk; GET result
  serves the object with the synchronous answer's bytes and headers (streamed), or, with
  RESULTS_PRESIGNED_S, a 307 to a presigned URL that the bucket serves.
- DELETE and JOB_TTL_S expiry remove the objects with the job.
- A bucket that does not answer: submissions and result reads answer 503 naming the store, a job
  that cannot write its result fails saying so, and the gateway serves again once it is back;
  a gateway started on an unreachable bucket stops at once, saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import httpx
import numpy as np
import pytest

from tests.gateway_process import encoded, start_gateway
from tests.jobs_client import accepted, files_of, slow_log, submit, wait_for, wait_until
from tests.servers import free_port
from tests.slow_predictor import start_slow_predictor
from tests.storage_initializer import S3
from transformer.errors import GatewayError
from transformer.jobs.config import S3Location
from transformer.jobs.files import RESULTS
from transformer.jobs.s3_files import S3FileStore

FAST_MS = 128  # the shortest call the routes allow
CALL_MS = 3000  # long enough to look at a running job
TTL_S = 2.0
PREFIX = "jobs/gw"


@contextlib.contextmanager
def moto(port: int = 0):
    """moto's S3 server on 127.0.0.1 (in this process; its buckets outlive a restart)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        host, bound = server.get_host_and_port()
        yield S3(f"http://{host}:{bound}"), bound
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3():
    with moto() as (server, _):
        yield server


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3-slow")
    process, address = start_slow_predictor(tmp / "slow.log")
    yield address, tmp / "slow.log"
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def photo(astronaut) -> bytes:
    return encoded(astronaut[:48, :64])


def new_bucket(s3: S3) -> str:
    bucket = f"photo-jobs-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    return bucket


def keys(s3: S3, bucket: str) -> set[str]:
    listing = s3.client().list_objects_v2(Bucket=bucket)
    return {obj["Key"] for obj in listing.get("Contents", [])}


def gateway_on(s3: S3, bucket: str, slow, tmp_path, **env):
    return start_gateway(
        {"upscale": slow[0]},
        tmp_path,
        env={
            **s3.env(),
            "RESULTS_STORE": f"s3://{bucket}/{PREFIX}",
            "JOB_LEASE_S": "1.5",  # expiry looked at every 0.5 s
            **env,
        },
    )


def test_a_jobs_upload_and_result_are_objects_served_by_the_gateway(s3, slow, photo, tmp_path):
    bucket = new_bucket(s3)
    gateway = gateway_on(s3, bucket, slow, tmp_path)
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            job = accepted(submit(client, "/upscale", photo, scale=1, tile_size=CALL_MS))
            upload, result = f"{PREFIX}/uploads/{job['id']}", f"{PREFIX}/results/{job['id']}"
            assert keys(s3, bucket) == {upload}
            stored = s3.client().get_object(Bucket=bucket, Key=upload)["Body"].read()
            assert stored == photo
            done = wait_for(client, job, ("succeeded", "failed"))
            assert done["status"] == "succeeded", done
            wait_until(lambda: keys(s3, bucket) == {result}, within_s=30)  # the upload goes

            served = client.get(job["urls"]["result"])
            sync = client.post(
                "/upscale", params={"scale": 1, "tile_size": FAST_MS}, files=files_of(photo)
            )
            assert served.status_code == sync.status_code == 200
            assert served.content == sync.content
            assert (
                served.content == s3.client().get_object(Bucket=bucket, Key=result)["Body"].read()
            )
            for header in ("content-type", "x-steps", "content-length"):
                assert served.headers[header] == sync.headers[header], header
            # Nothing of the job's files on the gateway's own disk.
            assert not (tmp_path / f"data-{gateway.port}" / "files").exists()

            assert client.delete(job["urls"]["self"]).status_code == 204
            assert keys(s3, bucket) == set()
            assert client.get(job["urls"]["result"]).status_code == 404
    finally:
        gateway.stop()
    assert "Traceback" not in gateway.log()


def test_ttl_expiry_removes_the_objects(s3, slow, photo, tmp_path):
    bucket = new_bucket(s3)
    gateway = gateway_on(s3, bucket, slow, tmp_path, JOB_TTL_S=str(TTL_S))
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            job = accepted(submit(client, "/upscale", photo, scale=1, tile_size=FAST_MS))
            ended = wait_for(client, job, ("succeeded", "failed"))
            assert ended["status"] == "succeeded", ended
            wait_until(lambda: client.get(job["urls"]["self"]).status_code == 404, within_s=60)
            wait_until(lambda: keys(s3, bucket) == set(), within_s=30)
    finally:
        gateway.stop()


def test_a_presigned_url_is_served_by_the_bucket(s3):
    """RESULTS_PRESIGNED_S: a 307 to the object, with the answer's headers."""
    bucket = new_bucket(s3)
    where = S3Location(bucket, "p/", s3.endpoint)
    env = s3.env()
    data = encoded(np.zeros((8, 8, 3), np.uint8))

    async def scenario():
        files = S3FileStore(where, presigned_s=60)
        await files.open()
        await files.put(RESULTS, "abc", data)
        found = await files.response(RESULTS, "abc", "image/png", {"X-Steps": "upscale"})
        with pytest.raises(GatewayError, match="gone"):
            await files.response(RESULTS, "nothing", "image/png", {})
        return found

    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            patch.setenv(name, env[name])
        found = asyncio.run(scenario())
    assert found.status_code == 307 and found.headers["x-steps"] == "upscale"
    fetched = httpx.get(found.headers["location"])
    assert fetched.status_code == 200 and fetched.content == data
    assert fetched.headers["content-type"] == "image/png"
    query = httpx.URL(found.headers["location"]).params
    assert query["X-Amz-Expires"] == "60" and query["X-Amz-Signature"]


def test_a_bucket_that_does_not_answer_is_a_503_and_the_gateway_serves_again_after(
    slow, photo, tmp_path
):
    port = free_port()
    with moto(port) as (s3, _):
        bucket = new_bucket(s3)
        gateway = gateway_on(s3, bucket, slow, tmp_path)
    try:
        with httpx.Client(base_url=gateway.url, timeout=120) as client:
            # The bucket is away: a submission is refused before anything is stored.
            refused = submit(client, "/upscale", photo, scale=1, tile_size=FAST_MS)
            assert refused.status_code == 503, refused.text
            assert int(refused.headers["retry-after"]) >= 1
            detail = refused.json()["detail"]
            assert f"results store (s3://{bucket}/{PREFIX}/" in detail
            assert "does not answer" in detail
            assert client.get("/v1/jobs/" + "0" * 32).status_code == 404  # the store still reads
            with moto(port):
                started = slow_log(slow, "start")
                job = accepted(submit(client, "/upscale", photo, scale=1, tile_size=CALL_MS))
                wait_until(lambda: slow_log(slow, "start") > started, within_s=60)
            # Its result cannot be written: the job fails, saying why.
            failed = wait_for(client, job, ("succeeded", "failed"))
            assert failed["status"] == "failed", failed
            assert failed["error"]["status"] == 503
            assert "results store" in failed["error"]["detail"]
            with moto(port):
                again = accepted(submit(client, "/upscale", photo, scale=1, tile_size=FAST_MS))
                done = wait_for(client, again, ("succeeded", "failed"))
                assert done["status"] == "succeeded", done
                served = client.get(again["urls"]["result"])
                assert served.status_code == 200 and served.content.startswith(b"\x89PNG")
            result = client.get(again["urls"]["result"])
            assert result.status_code == 503 and "results store" in result.json()["detail"]
        assert "Traceback" not in gateway.log()
    finally:
        gateway.stop()


def test_a_gateway_on_an_unreachable_bucket_stops_saying_why():
    where = S3Location("photo-jobs", "", f"http://127.0.0.1:{free_port()}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "x")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "y")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with pytest.raises(
            RuntimeError, match=r"RESULTS_STORE=s3://photo-jobs/: .*does not answer"
        ):
            asyncio.run(S3FileStore(where).open())
