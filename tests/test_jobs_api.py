"""Jobs through a real gateway process (CONTRACT section 6): `Prefer: respond-async`, the job
resource, its result, its events, cancel, delete, idempotency, the queue limit, and bad input.

Real processes: the gateway; a restore predictor serving generated NAFNet weights on CPU (the
answers compared with the synchronous ones); tests/slow_predictor.py as the upscale predictor (a
real KServe server whose every call takes `tile_size` ms and logs what reached it and what was
cancelled); face-restore at a closed port. Times are the slow predictor's configured ones; the
assertions compare against them, never against a figure tuned to this machine.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.gateway_process import decoded, encoded, start_gateway
from tests.jobs_client import (
    ASYNC,
    accepted,
    events,
    files_of,
    slow_log,
    stored_files,
    stored_jobs,
    submit,
    wait_for,
    wait_until,
)
from tests.servers import free_port, running_predictor
from tests.slow_predictor import start_slow_predictor

STEP_MS = 400  # a short slow-predictor call
LONG_MS = 30_000  # a call that is cancelled long before it would end
MAX_QUEUED = 3
MAX_OUTPUT_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jobs-slow")
    process, address = start_slow_predictor(tmp / "slow.log")
    yield address, tmp / "slow.log"
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def restore_predictor(weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jobs-restore")
    with running_predictor("restore", weights.model_dir("restore", "denoise"), tmp) as server:
        yield server


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jobs-data")


@pytest.fixture(scope="module")
def gateway(slow, restore_predictor, data_dir, tmp_path_factory):
    closed = f"127.0.0.1:{free_port()}"
    gw = start_gateway(
        {"restore": restore_predictor.grpc, "upscale": slow[0], "face-restore": closed},
        tmp_path_factory.mktemp("jobs-gateway"),
        env={
            "DATA_DIR": str(data_dir),
            "JOBS_CONCURRENCY": "1",
            "MAX_JOBS_QUEUED": str(MAX_QUEUED),
            "MAX_OUTPUT_PIXELS": str(MAX_OUTPUT_PIXELS),
        },
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def photo(astronaut) -> bytes:
    """The astronaut at 64x48 (not square), as PNG."""
    return encoded(np.asarray(Image.fromarray(astronaut).resize((64, 48), Image.LANCZOS)))


def synchronous(client, route, data, **params) -> httpx.Response:
    return client.post(route, params=params, files=files_of(data))


# --- submit, poll, result -----------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/v1/restore", "/restore"])
def test_a_job_answers_what_the_synchronous_route_answers(client, photo, route):
    reply = submit(client, route, photo, tile_size=0, output_format="png")
    job = accepted(reply)
    assert job["task"] == "restore" and job["status"] in ("queued", "running")
    assert job["urls"] == {
        "self": f"/v1/jobs/{job['id']}",
        "result": f"/v1/jobs/{job['id']}/result",
        "events": f"/v1/jobs/{job['id']}/events",
    }
    assert job["created_at"].endswith("Z") and job["error"] is None
    done = wait_for(client, job, ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    assert done["progress"]["done"] == done["progress"]["total"] >= 1
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    result = client.get(done["urls"]["result"])
    sync = synchronous(client, route, photo, tile_size=0, output_format="png")
    assert result.status_code == 200 == sync.status_code
    for header in ("content-type", "x-steps"):
        assert result.headers[header] == sync.headers[header]
    assert "server-timing" in result.headers
    assert np.array_equal(np.asarray(decoded(result.content)), np.asarray(decoded(sync.content)))


def test_a_raw_body_and_other_preferences_are_accepted(client, photo):
    reply = client.post(
        "/v1/restore",
        content=photo,
        headers={"Content-Type": "image/png", "Prefer": "wait=5, respond-async"},
    )
    job = wait_for(client, accepted(reply), ("succeeded", "failed"))
    assert job["status"] == "succeeded", job
    without = client.post("/v1/restore", content=photo, headers={"Content-Type": "image/png"})
    assert without.status_code == 200 and "preference-applied" not in without.headers


def test_a_task_this_gateway_does_not_serve_is_the_synchronous_503_and_no_job(
    client, photo, data_dir
):
    rows = stored_jobs(data_dir)
    forced = {"colorize": "true", "width": 200, "height": 200}  # auto skips it for a colour photo
    for route, params in (("/colorize", {}), ("/pipeline", forced)):
        sync = synchronous(client, route, photo, **params)
        job = submit(client, route, photo, **params)
        assert sync.status_code == job.status_code == 503 and job.json() == sync.json(), sync.text
        assert "does not offer colorize" in job.json()["detail"]
        assert "retry-after" not in job.headers and "retry-after" not in sync.headers
    assert stored_jobs(data_dir) == rows


def test_a_job_waits_for_an_unavailable_predictor_until_canceled(client, photo):
    job = accepted(submit(client, "/face-restore", photo))
    sync = synchronous(client, "/face-restore", photo)
    assert sync.status_code == 503 and "retry-after" in sync.headers
    waiting = wait_until(
        lambda: "not available" in client.get(job["urls"]["self"]).json()["progress"]["stage"],
        within_s=60,
    )
    assert waiting < 60
    current = client.get(job["urls"]["self"]).json()
    assert current["status"] == "running" and sync.json()["detail"] in current["progress"]["stage"]
    result = client.get(job["urls"]["result"])
    assert result.status_code == 409 and int(result.headers["retry-after"]) >= 1
    canceled = client.post(f"{job['urls']['self']}/cancel").json()
    assert canceled["status"] == "canceled" and canceled["error"] is None
    (only,) = list(events(client, job))
    assert only.name == "done" and only.job["status"] == "canceled"


def test_unknown_jobs_are_404(client):
    for path in ("/v1/jobs/nope", f"/v1/jobs/{'0' * 32}", f"/v1/jobs/{'0' * 32}/result"):
        reply = client.get(path)
        assert reply.status_code == 404 and "unknown" in reply.json()["detail"]
    assert client.post(f"/v1/jobs/{'0' * 32}/cancel").status_code == 404
    assert client.delete(f"/v1/jobs/{'0' * 32}").status_code == 404
    assert client.get(f"/v1/jobs/{'0' * 32}/events").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events"} <= set(paths)


# --- bad input never becomes a job --------------------------------------------------------------


def test_bad_input_gets_the_synchronous_4xx_and_no_job(client, photo, astronaut, data_dir):
    big = encoded(astronaut[:256, :256])  # x8 = 2048 x 2048, over MAX_OUTPUT_PIXELS
    gif = b"GIF89a" + bytes(64)
    cases = [
        ("/restore", {}, b"\x89PNG\r\n\x1a\nnot really", "image/png", 400),
        ("/restore", {}, gif, "image/gif", 415),
        ("/restore", {"tile_size": 8}, photo, "image/png", 422),
        ("/v1/upscale", {"scale": 8}, big, "image/png", 413),
        ("/restore", {}, b"", "image/png", 400),
        ("/restore", {}, b"plain text", "text/plain", 415),
        ("/pipeline", {"width": 16384, "height": 16384}, photo, "image/png", 413),
    ]
    rows, files = stored_jobs(data_dir), stored_files(data_dir)
    for route, params, body, media, status in cases:
        headers = {"Content-Type": media}
        sync = client.post(route, params=params, content=body, headers=headers)
        job = client.post(route, params=params, content=body, headers={**headers, **ASYNC})
        assert sync.status_code == job.status_code == status, (route, job.text)
        assert job.json() == sync.json()
        assert "location" not in job.headers
    assert stored_jobs(data_dir) == rows and stored_files(data_dir) == files


# --- events and progress ------------------------------------------------------------------------


def test_pipeline_events_cover_all_steps_and_resume_after_the_last_seen(client, photo):
    # Both steps take STEP_MS on the slow predictor, so that each one's stage is seen.
    steps = dict(restore_tile_size=STEP_MS, upscale_tile_size=STEP_MS)
    params = dict(colorize=False, face_restore=False, width=200, height=200, **steps)
    job = accepted(submit(client, "/pipeline", photo, **params))
    stream = events(client, job)
    first = next(stream)
    stream.close()  # a dropped connection; the client resumes with the id it saw last
    rest = list(events(client, job, last_event_id=first.id))
    seen = [first, *rest]
    ids = [int(event.id) for event in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    assert [e.name for e in seen] == ["progress"] * (len(seen) - 1) + ["done"]
    final = seen[-1].job
    assert final["status"] == "succeeded"
    progress = [e.job["progress"] for e in seen if e.job["status"] != "queued"]
    dones = [p["done"] for p in progress]
    assert dones == sorted(dones), "progress went backwards"
    assert all(0 <= p["done"] <= p["total"] for p in progress)
    assert final["progress"]["done"] == final["progress"]["total"]
    stages = [p["stage"] for p in progress]
    assert any("(step 1 of 2)" in s and s.startswith("restore") for s in stages), stages
    upscaling = [p for p in progress if p["stage"].startswith("upscale")]
    assert upscaling and all("(step 2 of 2)" in p["stage"] for p in upscaling), stages
    # The second step starts where the first ended: half of the whole, not 0.
    assert all(p["done"] * 2 >= p["total"] for p in upscaling), upscaling
    # After the end: the done event again for one who missed it, nothing for one who saw it.
    (again,) = list(events(client, job, last_event_id=str(ids[0])))
    assert again.name == "done" and again.id == str(ids[-1])
    over = client.get(job["urls"]["events"], headers={"Last-Event-ID": str(ids[-1])})
    assert over.status_code == 204
    sync = synchronous(client, "/pipeline", photo, **params)
    result = client.get(job["urls"]["result"])
    assert (
        result.headers["x-steps"] == sync.headers["x-steps"] == "restore,upscale x4,resize 200x150"
    )
    assert np.array_equal(np.asarray(decoded(result.content)), np.asarray(decoded(sync.content)))


# --- cancel, idempotency, the queue limit ---------------------------------------------------------


def test_cancel_stops_the_running_predictor_call(client, photo, slow):
    started, cancelled = slow_log(slow, "start"), slow_log(slow, "cancelled")
    job = accepted(submit(client, "/upscale", photo, scale=1, tile_size=LONG_MS))
    wait_until(lambda: slow_log(slow, "start") > started, within_s=60)
    assert client.get(job["urls"]["self"]).json()["status"] == "running"
    start = time.monotonic()
    reply = client.post(f"{job['urls']['self']}/cancel")
    assert reply.status_code == 200 and reply.json()["status"] == "canceled"
    stopped = wait_until(lambda: slow_log(slow, "cancelled") > cancelled, within_s=LONG_MS / 1000)
    assert stopped < LONG_MS / 1000 / 10, f"the predictor call stopped {stopped:.1f} s after"
    # The predictor is free: the next request does not wait for the canceled call.
    sync = synchronous(client, "/upscale", photo, scale=1, tile_size=STEP_MS)
    assert sync.status_code == 200 and time.monotonic() - start < LONG_MS / 1000 / 5
    canceled = client.get(job["urls"]["self"]).json()
    assert canceled["status"] == "canceled" and canceled["finished_at"] is not None
    result = client.get(job["urls"]["result"])
    assert result.status_code == 409 and "retry-after" not in result.headers
    assert client.post(f"{job['urls']['self']}/cancel").json()["status"] == "canceled"


def test_an_idempotency_key_gets_the_same_job_and_runs_it_once(client, photo, slow):
    started = slow_log(slow, "start")
    key = {"Idempotency-Key": f"test-{time.time_ns()}"}
    first = accepted(submit(client, "/upscale", photo, key, scale=1, tile_size=STEP_MS))
    second = accepted(submit(client, "/upscale", photo, key, scale=1, tile_size=STEP_MS))
    assert second["id"] == first["id"]
    done = wait_for(client, first, ("succeeded", "failed"))
    assert done["status"] == "succeeded"
    third = accepted(submit(client, "/upscale", photo, key, scale=1, tile_size=STEP_MS))
    assert third["id"] == first["id"] and third["status"] == "succeeded"
    assert slow_log(slow, "start") == started + 1
    other = submit(client, "/restore", photo, key)
    assert other.status_code == 422 and first["id"] in other.json()["detail"]
    bad = submit(client, "/upscale", photo, {"Idempotency-Key": "x" * 300}, scale=1)
    assert bad.status_code == 400


def test_max_jobs_queued_is_429_with_retry_after_and_delete_forgets(client, photo, slow, data_dir):
    started = slow_log(slow, "start")
    running = accepted(submit(client, "/upscale", photo, scale=1, tile_size=LONG_MS))
    wait_until(lambda: slow_log(slow, "start") > started, within_s=60)
    queued = [
        accepted(submit(client, "/upscale", photo, scale=1, tile_size=STEP_MS))
        for _ in range(MAX_QUEUED)
    ]
    assert {client.get(j["urls"]["self"]).json()["status"] for j in queued} == {"queued"}
    full = submit(client, "/upscale", photo, scale=1, tile_size=STEP_MS)
    assert full.status_code == 429 and "MAX_JOBS_QUEUED" in full.json()["detail"]
    assert int(full.headers["retry-after"]) >= 1
    # Synchronous requests do not count against the job queue.
    assert synchronous(client, "/restore", photo).status_code == 200
    result = client.get(queued[0]["urls"]["result"])
    assert result.status_code == 409 and int(result.headers["retry-after"]) >= 1
    ids = {j["id"] for j in [running, *queued]}
    assert ids <= {row[0] for row in stored_jobs(data_dir)}
    assert {f"uploads/{i}" for i in ids} <= stored_files(data_dir)
    for job in [running, *queued]:
        assert client.delete(job["urls"]["self"]).status_code == 204
        assert client.get(job["urls"]["self"]).status_code == 404
        assert client.get(job["urls"]["result"]).status_code == 404
    assert not ids & {row[0] for row in stored_jobs(data_dir)}
    wait_until(lambda: not any(f.split("/")[1] in ids for f in stored_files(data_dir)), 10)
    assert accepted(submit(client, "/upscale", photo, scale=1, tile_size=STEP_MS))
