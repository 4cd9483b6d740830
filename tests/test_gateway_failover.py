"""A replica that fails is skipped and rejoins (CONTRACT section 8), with real predictors: two
restore predictors (generated NAFNet weights) behind one gateway given both addresses.

- One is killed while clients keep sending: every request is answered 200 (the calls it had in
  flight, and those that pick it before the gateway knows, go to the other one).
- Restarted on its address, it is back among the replicas up within 3 s of its readiness
  (the gateway probes failed replicas every second), and takes calls again.
"""

from __future__ import annotations

import io
import re
import threading
import time

import httpx
import pytest
from PIL import Image

from tests.gateway_process import start_gateway
from tests.servers import start_predictor

REJOINED_WITHIN_S = 3


@pytest.fixture(scope="module")
def stack(weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("failover")
    model_dir = weights.model_dir("restore", "denoise")
    one = start_predictor("restore", model_dir, tmp)
    two = start_predictor("restore", model_dir, tmp)
    gateway = None
    try:
        one.wait()
        two.wait()
        gateway = start_gateway({"restore": f"{one.grpc},{two.grpc}"}, tmp)
        yield [one, two], gateway, (model_dir, tmp)
    finally:
        if gateway is not None:
            gateway.stop()
        one.stop()
        two.stop()


def png(photo) -> bytes:
    out = io.BytesIO()
    Image.fromarray(photo).save(out, "PNG")
    return out.getvalue()


def restore(url: str, body: bytes) -> httpx.Response:
    files = {"file": ("photo.png", body, "image/png")}
    return httpx.post(f"{url}/restore", files=files, timeout=120)


def replicas_up(url: str) -> int:
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    return int(float(re.search(r'photo_enhance_replicas_up\{task="restore"\} (\S+)', metrics)[1]))


def ready_replicas_answered(gateway, body: bytes) -> None:
    assert restore(gateway.url, body).status_code == 200
    assert replicas_up(gateway.url) == 2


def test_a_replica_killed_mid_traffic_costs_no_request(stack, astronaut):
    (one, _), gateway, _ = stack
    body = png(astronaut[:96, :96])
    ready_replicas_answered(gateway, body)
    statuses: list[int] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            statuses.append(restore(gateway.url, body).status_code)

    clients = [threading.Thread(target=client) for _ in range(3)]
    for thread in clients:
        thread.start()
    try:
        deadline = time.monotonic() + 120
        while len(statuses) < 6 and time.monotonic() < deadline:  # traffic on both first
            time.sleep(0.05)
        one.process.kill()
        one.process.wait()
        killed_at = len(statuses)
        deadline = time.monotonic() + 60
        while len(statuses) < killed_at + 9 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in clients:
            thread.join(120)
    assert len(statuses) >= killed_at + 9, "too few requests after the kill"
    assert set(statuses) == {200}, statuses
    assert replicas_up(gateway.url) == 1
    log = gateway.log()
    assert f"replica {one.grpc} failed" in log
    assert "Traceback" not in log


def test_a_restarted_replica_rejoins_within_3_s_of_ready(stack, astronaut):
    (one, two), gateway, (model_dir, tmp) = stack
    body = png(astronaut[:96, :96])
    if one.process.poll() is None:  # run alone: take it down first
        one.process.kill()
        one.process.wait()
        assert restore(gateway.url, body).status_code == 200
    again = start_predictor("restore", model_dir, tmp, ports=(one.http_port, one.grpc_port))
    try:
        again.wait()
        ready_at = time.monotonic()
        while replicas_up(gateway.url) < 2:
            assert time.monotonic() - ready_at < 30, "the replica never rejoined"
            time.sleep(0.05)
        rejoined = time.monotonic() - ready_at
        print(f"rejoined {rejoined:.2f} s after the restarted replica was ready")
        assert rejoined < REJOINED_WITHIN_S
        # it takes calls again: with the other one gone, every request goes to it
        two.process.kill()
        two.process.wait()
        assert [restore(gateway.url, body).status_code for _ in range(3)] == [200] * 3
        assert f"replica {one.grpc} is ready" in gateway.log()
    finally:
        one.process = again.process  # the module fixture stops whichever runs
