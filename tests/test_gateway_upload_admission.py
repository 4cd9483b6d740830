"""Admission before the body (issue 19): a request holds its place in its task's queue from its
headers on, so that a full queue answers 429 with Retry-After before an upload streams in; large
raw uploads wait on disk while they arrive. A real gateway in front of the slow stand-in predictor
(tests/slow_predictor.py: `tile_size` ms per request), with one request at the predictor and one
waiting (MAX_INFLIGHT_PER_TASK=1, MAX_QUEUE_PER_TASK=1): two places per task."""

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

PLACES = 2  # MAX_INFLIGHT_PER_TASK + MAX_QUEUE_PER_TASK
HOLD_MS = 4000  # how long the slow predictor takes for the requests that fill the queue


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    process, address = start_slow_predictor(tmp / "slow.log")
    yield address, tmp / "slow.log"
    stop_process(process)


@pytest.fixture(scope="module")
def gateway(slow, tmp_path_factory):
    env = {"MAX_INFLIGHT_PER_TASK": "1", "MAX_QUEUE_PER_TASK": "1", "UPLOAD_IDLE_TIMEOUT_S": "60"}
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
    photo = check.png(32)
    started = slow[1].read_text().count("start")
    replies: list[int] = []
    fill = [
        threading.Thread(target=lambda: replies.append(post(gateway, photo, tile_size=HOLD_MS)))
        for _ in range(PLACES)
    ]
    for thread in fill:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while slow[1].read_text().count("start") == started:  # one is at the predictor
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answer = b""
        while not answer.startswith(b"HTTP/1.1 429"):  # the other joins the queue
            assert time.monotonic() < deadline, answer
            answer = headers_only(gateway)
        assert b"retry-after" in answer.lower() and b"was not read" in answer
    finally:
        for thread in fill:
            thread.join()
    assert [r.status_code for r in replies] == [200] * PLACES


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
