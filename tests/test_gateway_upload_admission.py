"""Admission before the body (issue 19): a request holds its place in its task's queue from its
headers on, so that a full queue answers 429 with Retry-After before an upload streams in; large
raw uploads wait on disk while they arrive. A real gateway in front of the slow stand-in predictor
(tests/slow_predictor.py: `tile_size` ms per request), with one request at the predictor and none
waiting (MAX_INFLIGHT_PER_TASK=1, MAX_QUEUE_PER_TASK=0): one place per task, so that the queue is
full exactly while a request is at the predictor. An upload holds its
place at most until the request's deadline (PREDICTOR_TIMEOUT_S)."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np
import pytest

from tests.gateway_process import decoded, encoded, start_gateway
from tests.hostile import check
from tests.servers import stop_process
from tests.slow_predictor import start_slow_predictor
from transformer import arrivals, operations, tasks

PLACES = 1  # MAX_INFLIGHT_PER_TASK + MAX_QUEUE_PER_TASK
HOLD_MS = 4000  # how long the request at the slow predictor takes: the queue is full meanwhile
TIMEOUT_S = 10  # PREDICTOR_TIMEOUT_S


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    process, address = start_slow_predictor(tmp / "slow.log")
    yield address, tmp / "slow.log"
    stop_process(process)


@pytest.fixture(scope="module")
def gateway(slow, tmp_path_factory):
    env = {
        "MAX_INFLIGHT_PER_TASK": "1",
        "MAX_QUEUE_PER_TASK": "0",
        "PREDICTOR_TIMEOUT_S": str(TIMEOUT_S),
        "UPLOAD_IDLE_TIMEOUT_S": "60",
        "UPLOAD_MIN_BYTES_PER_S": "1",
    }
    gw = start_gateway({"restore": slow[0]}, tmp_path_factory.mktemp("gw"), env=env)
    yield gw
    gw.stop()


def post(gateway, body: bytes, **params) -> httpx.Response:
    files = {"file": ("photo.png", body, "image/png")}
    return httpx.post(f"{gateway.url}/restore", params=params, files=files, timeout=120)


def served_within(gateway, seconds: float = 30) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while (reply := post(gateway, check.png(32))).status_code == 429:
        assert time.monotonic() < deadline, reply.text
        time.sleep(0.2)
    return reply


def headers_only(gateway) -> bytes:
    """A 31 MB upload's headers and not a byte of its body; what comes back within 2 s."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as conn:
        conn.sendall(check.upload_head(gateway.url, "/restore", 31 << 20))
        return check.read_reply(conn, timeout=2)


def test_stalled_uploads_hold_the_places_and_one_more_gets_429_before_its_body(gateway):
    outcome = check.check_upload_refused_before_body(gateway.url, "/restore")
    assert outcome["stalled_uploads"] == PLACES, outcome
    assert outcome["answer"].startswith(b"HTTP/1.1 429")
    # the stalled uploads hung up: their places are free again
    assert served_within(gateway).status_code == 200


def test_a_full_queue_answers_429_before_the_body_is_sent(gateway, slow):
    reply: list[int] = []
    started = slow[1].read_text().count("start ")
    running = threading.Thread(
        target=lambda: reply.append(post(gateway, check.png(32), tile_size=HOLD_MS).status_code)
    )
    running.start()
    try:
        deadline = time.monotonic() + 30
        while slow[1].read_text().count("start ") == started:  # it is at the predictor: full
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answer = headers_only(gateway)
        assert answer.startswith(b"HTTP/1.1 429"), answer
        assert b"retry-after" in answer.lower() and b"was not read" in answer
        # A client that sends its body anyway (no Expect: 100-continue) reads the same 429 on a
        # connection that serves its next request (the body is discarded, not taken for headers).
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            big = {"Content-Type": "image/png"}
            assert client.post("/restore", content=bytes(4 << 20), headers=big).status_code == 429
            assert client.get("/v2/health/live").status_code == 200
    finally:
        running.join()
    assert reply == [200]


def test_a_trickling_upload_gives_up_its_place_at_the_request_s_deadline(gateway):
    """An upload that keeps its pace rules (a byte every second here) but not the request's
    budget is answered 504 at PREDICTOR_TIMEOUT_S, freeing its queue place then."""
    begun = time.monotonic()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=60) as conn:
        conn.sendall(check.upload_head(gateway.url, "/restore", 1 << 20))
        answer = b""
        while not answer and time.monotonic() - begun < 3 * TIMEOUT_S:
            conn.sendall(b"x")
            answer = check.read_reply(conn, timeout=1)
    took = time.monotonic() - begun
    assert answer.startswith(b"HTTP/1.1 504"), answer
    assert b"while its upload arrived" in answer and b"PREDICTOR_TIMEOUT_S" in answer
    assert TIMEOUT_S - 1 < took < 2 * TIMEOUT_S, took


def test_a_large_raw_upload_is_served_through_the_spool(gateway):
    noise = np.random.default_rng(1).integers(0, 256, (1024, 1024, 3), np.uint8)
    body = encoded(noise)
    assert len(body) > 2 << 20  # more than the spool keeps in memory (uploads.SPOOL_BYTES)
    reply = httpx.post(
        f"{gateway.url}/restore",
        content=body,
        headers={"Content-Type": "image/png"},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    assert np.array_equal(np.asarray(decoded(reply.content)), noise)


@pytest.mark.parametrize(
    ("colorize", "restore", "first"),
    [
        (True, True, "colorize"),
        (False, True, "restore"),
        ("auto", True, None),  # decided on the photo
        (False, False, None),  # upscale (on the image's size) or faces
    ],
)
def test_the_pipeline_s_first_queue_is_known_only_when_certain(colorize, restore, first):
    options = tasks.PipelineOptions(
        colorize=colorize,
        restore=restore,
        upscale=True,
        face_restore=True,
        width=512,
        height=512,
        render_factor=16,
        restore_tile_size=0,
        fidelity=0.5,
        upscale_tile_size=0,
    )
    assert arrivals.first_task(operations.Pipeline(options, "png")) == first
    assert arrivals.first_task(operations.Upscale(2, 0, "png")) == "upscale"
