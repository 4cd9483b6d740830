"""Bounded work, load shedding, abandoned work, slow uploads, a closed surface, quiet logs.

A real gateway process, configured with small limits so that small images reach them. Its
upscale and restore predictor is tests/slow_predictor.py (a real KServe server that takes
`tile_size` ms per request and says what reached it); face-restore is a closed port. Times are
measured in the tests against deadlines; nothing sleeps to wait for an outcome.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from common.limits import MIN_TILE_SIZE
from tests.gateway_process import encoded, start_gateway
from tests.servers import free_port
from tests.slow_predictor import start_slow_predictor

TIMEOUT_S = 2.0  # PREDICTOR_TIMEOUT_S: each request's whole budget
QUEUE = 2  # MAX_QUEUE_PER_TASK
IDLE_S = 1.0  # UPLOAD_IDLE_TIMEOUT_S
MIN_RATE = 2000  # UPLOAD_MIN_BYTES_PER_S
MAX_OUTPUT_PIXELS = 1_000_000
GRPC_MAX = 2 * 1024 * 1024
MAX_RENDER_FACTOR = 40
ABANDONED_WORK_MS = 10_000  # a request the slow predictor would work on for 10 s


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow-predictor")
    process, address = start_slow_predictor(tmp / "slow.log")
    yield address, tmp / "slow.log"
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def gateway(slow, tmp_path_factory):
    address, _ = slow
    closed = f"127.0.0.1:{free_port()}"
    gw = start_gateway(
        {"upscale": address, "restore": address, "face-restore": closed},
        tmp_path_factory.mktemp("gateway-limits"),
        env={
            "PREDICTOR_TIMEOUT_S": str(TIMEOUT_S),
            "MAX_QUEUE_PER_TASK": str(QUEUE),
            "UPLOAD_IDLE_TIMEOUT_S": str(IDLE_S),
            "UPLOAD_MIN_BYTES_PER_S": str(MIN_RATE),
            "MAX_OUTPUT_PIXELS": str(MAX_OUTPUT_PIXELS),
            "GRPC_MAX_MESSAGE_BYTES": str(GRPC_MAX),
            "MAX_RENDER_FACTOR": str(MAX_RENDER_FACTOR),
            "LOG_FORMAT": "json",
        },
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def png(astronaut):
    return lambda side: encoded(astronaut[:side, :side])


def upload(client, route, data, **params):
    return client.post(route, params=params, files={"file": ("photo.png", data, "image/png")})


def slow_log(slow) -> list[str]:
    return slow[1].read_text().splitlines()


def wait_until(condition, within_s: float) -> float:
    """Seconds until condition() held; fails after within_s."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < within_s, "condition not met in time"
        time.sleep(0.02)
    return time.monotonic() - start


# --- bounds, checked before any work -------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "name"),
    [
        ("/restore", "tile_size"),
        ("/upscale", "tile_size"),
        ("/pipeline", "restore_tile_size"),
        ("/pipeline", "upscale_tile_size"),
    ],
)
def test_tiles_under_the_floor_are_422_and_0_is_still_whole_image(client, png, route, name):
    for tile in (1, 8, MIN_TILE_SIZE - 1):
        reply = upload(client, route, png(64), **{name: tile})
        assert reply.status_code == 422, reply.text
        (error,) = reply.json()["detail"]
        assert error["loc"] == ["query", name] and str(MIN_TILE_SIZE) in error["msg"]
    for tile in (0, MIN_TILE_SIZE):
        assert upload(client, route, png(64), **{name: tile}).status_code != 422


def test_answer_over_max_output_pixels_is_413_before_any_work(client, png, slow):
    reached = len(slow_log(slow))
    reply = upload(client, "/upscale", png(256), scale=4, tile_size=0)  # 1024 x 1024
    assert reply.status_code == 413 and "MAX_OUTPUT_PIXELS" in reply.json()["detail"]
    start = time.monotonic()
    reply = upload(client, "/pipeline", png(64), width=16384, height=16384)
    assert reply.status_code == 413 and "16384x16384" in reply.json()["detail"]
    assert time.monotonic() - start < 2  # refused up front, not after the steps
    assert len(slow_log(slow)) == reached  # nothing reached the predictor


def test_steps_over_the_grpc_message_limit_are_413_up_front(client, png, slow):
    reached = len(slow_log(slow))
    # 800 x 800 RGB = 1.9 MB, over the 2 MiB limit once the message's own room is counted.
    reply = upload(client, "/face-restore", png(400), upscale=2)
    assert reply.status_code == 413 and "GRPC_MAX_MESSAGE_BYTES" in reply.json()["detail"]
    params = {"colorize": False, "width": 900, "height": 900}
    reply = upload(client, "/pipeline", png(64), **params)  # the face step's 900 x 900
    assert reply.status_code == 413 and "face-restore" in reply.json()["detail"]
    assert len(slow_log(slow)) == reached


def test_render_factor_maximum_is_configurable_and_documented(client, png):
    reply = upload(client, "/colorize", png(64), render_factor=MAX_RENDER_FACTOR + 1)
    assert reply.status_code == 422
    assert upload(client, "/colorize", png(64), render_factor=MAX_RENDER_FACTOR).status_code == 503
    schema = client.get("/openapi.json").json()
    for path in ("/colorize", "/pipeline"):
        params = schema["paths"][path]["post"]["parameters"]
        (factor,) = [p for p in params if p["name"] == "render_factor"]
        assert factor["schema"]["maximum"] == MAX_RENDER_FACTOR


# --- load shedding, deadlines, abandoned work ------------------------------------------------


def test_a_full_queue_answers_429_with_retry_after_at_once(gateway, png):
    def send(results, i):
        with httpx.Client(base_url=gateway.url, timeout=30) as c:
            start = time.monotonic()
            reply = upload(c, "/upscale", png(32), scale=1, tile_size=600)
            results[i] = (reply, time.monotonic() - start)

    results = [None] * (QUEUE + 3)
    threads = [threading.Thread(target=send, args=(results, i)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(reply.status_code for reply, _ in results)
    assert statuses == [200] * (QUEUE + 1) + [429] * 2  # one running, QUEUE waiting
    # Each 200 waited for at least its 600 ms turn; a 429 is refused at once, before any of them.
    quickest_200 = min(took for reply, took in results if reply.status_code == 200)
    for reply, took in results:
        if reply.status_code == 429:
            assert int(reply.headers["retry-after"]) >= 1
            assert "MAX_QUEUE_PER_TASK" in reply.json()["detail"]
            assert took < quickest_200, (took, quickest_200)


def test_a_client_that_gives_up_cancels_the_predictor_call(gateway, client, png, slow):
    before = len([line for line in slow_log(slow) if line.startswith("cancelled")])
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=gateway.url, timeout=0.5) as c:
        upload(c, "/restore", png(32), tile_size=ABANDONED_WORK_MS)
    # Stopped, not finished: each outcome comes well within the abandoned work's time.
    soon = ABANDONED_WORK_MS / 1000 / 4

    def cancelled() -> bool:
        return len([line for line in slow_log(slow) if line.startswith("cancelled")]) > before

    wait_until(cancelled, within_s=soon)
    wait_until(lambda: "hung up" in gateway.log(), within_s=soon)
    # The predictor is free again at once: the next request is not behind the abandoned one.
    start = time.monotonic()
    assert upload(client, "/restore", png(32), tile_size=0).status_code == 200
    assert time.monotonic() - start < soon
    metrics = client.get("/metrics").text
    assert 'photo_enhance_request_seconds_count{route="restore",status="499"}' in metrics
    assert 'photo_enhance_predictor_seconds_count{outcome="cancelled",task="restore"}' in metrics


def test_the_deadline_cancels_the_predictor_call_with_504(client, png, slow):
    before = len([line for line in slow_log(slow) if line.startswith("cancelled")])
    start = time.monotonic()
    reply = upload(client, "/upscale", png(32), scale=1, tile_size=10_000)
    took = time.monotonic() - start
    assert reply.status_code == 504 and "PREDICTOR_TIMEOUT_S" in reply.json()["detail"]
    assert TIMEOUT_S * 0.9 < took < TIMEOUT_S + 1.5
    wait_until(lambda: len([x for x in slow_log(slow) if x.startswith("cancelled")]) > before, 2)


def raw_post(gateway, route: str, length: int) -> socket.socket:
    """A connection that has sent the request line and headers of a raw image upload."""
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.sendall(
        f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
    )
    return sock


def status_of(sock: socket.socket) -> int:
    head = sock.recv(65536).decode(errors="replace")
    return int(head.split(" ", 2)[1])


def test_a_request_out_of_time_before_its_work_starts_is_dropped(gateway, png, slow):
    body = png(32) + bytes(4 * MIN_RATE)  # trailing bytes after a PNG's end are ignored
    reached = len(slow_log(slow))
    sock = raw_post(gateway, "/restore?tile_size=0", len(body))
    start = time.monotonic()
    with sock:
        for offset in range(0, len(body), MIN_RATE // 2):  # 2 s at 2x the minimum rate
            sock.sendall(body[offset : offset + MIN_RATE // 2])
            time.sleep(0.25)  # the client's pace: this is what the test is about
        assert status_of(sock) == 504
    assert time.monotonic() - start >= TIMEOUT_S
    assert len(slow_log(slow)) == reached  # dropped in the gateway


def test_an_upload_that_stops_is_408(gateway):
    sock = raw_post(gateway, "/upscale", 10_000)
    start = time.monotonic()
    with sock:
        sock.sendall(b"\x89PNG\r\n\x1a\n")
        assert status_of(sock) == 408
    assert IDLE_S * 0.9 < time.monotonic() - start < IDLE_S + 2


def test_an_upload_that_trickles_is_408(gateway):
    sock = raw_post(gateway, "/upscale", 10_000)
    start = time.monotonic()
    answer: list[int] = []
    with sock:
        sock.settimeout(0.1)
        while not answer:  # one byte every 50 ms: 20 B/s, under the 2000 B/s minimum
            assert time.monotonic() - start < IDLE_S + 3
            try:
                sock.sendall(b"x")
                answer.append(status_of(sock))
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
    assert answer == [408]


def test_a_client_hanging_up_mid_upload_is_one_log_line_not_a_500(gateway, client):
    marker = "the client hung up after sending"
    before = gateway.log().count(marker)
    with raw_post(gateway, "/upscale", 10_000) as sock:
        sock.sendall(b"\x89PNG\r\n\x1a\n" + bytes(100))
    wait_until(lambda: gateway.log().count(marker) > before, within_s=IDLE_S + 1)
    metrics = client.get("/metrics").text
    assert 'route="upscale",status="500"' not in metrics


# --- the surface and the logs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/gateway:predict"),
        ("POST", "/v2/models/gateway/infer"),
        ("GET", "/v2/models/gateway"),
        ("GET", "/v2/models/gateway/ready"),
        ("GET", "/v2"),
        ("POST", "/v2/repository/models/gateway/unload"),
        ("POST", "/v2/repository/models/gateway/load"),
        ("GET", "/v1/models"),
        ("GET", "/v1/anything"),
        ("GET", "/colorize/extra"),
    ],
)
def test_kserve_endpoints_are_not_served(client, method, path):
    reply = client.request(method, path)
    assert reply.status_code == 404 and reply.json() == {"detail": "Not Found"}


def test_the_gateway_own_endpoints_are_served_and_only_its_routes_documented(client):
    for path in ("/v2/health/live", "/v2/health/ready", "/health", "/v1/health", "/metrics"):
        assert client.get(path).status_code == 200, path
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 200, path
    paths = set(client.get("/openapi.json").json()["paths"])
    routes = {"/colorize", "/restore", "/face-restore", "/upscale", "/pipeline", "/health"}
    jobs = {f"/v1/jobs/{{job_id}}{tail}" for tail in ("", "/result", "/events", "/cancel")}
    assert paths == routes | {f"/v1{route}" for route in routes} | jobs


def test_health_names_the_unconfigured_tasks(client):
    models = client.get("/health").json()["models"]
    assert "not configured" in models["colorize"]["detail"]


def test_expected_failures_log_one_line_each_in_json(client, gateway, png):
    for _ in range(2):
        assert upload(client, "/face-restore", png(32)).status_code == 503
        client.get("/health")
    log = gateway.log()
    assert "Traceback" not in log and "Failed to" not in log
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    unavailable = [r for r in lines if "face-restore model is not available" in r["message"]]
    assert len(unavailable) == 2 and {r["level"] for r in unavailable} == {"WARNING"}
    assert {"time", "level", "logger", "message"} <= set(lines[0])
