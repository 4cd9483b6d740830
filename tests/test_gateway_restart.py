"""A predictor that restarts (same address, new process) is served through again within 3 s of
its readiness, however long it was down: the gateway's gRPC channel does not sit out a long
reconnect backoff. And /health says which device serves a task as soon as its model is ready.

Real processes: a restore predictor (generated NAFNet weights) and the gateway in front of it.
While the predictor is down the gateway keeps getting requests, as it would in a cluster, which
is what grows gRPC's reconnect backoff (by default up to two minutes).
"""

from __future__ import annotations

import io
import time

import httpx
import pytest
from PIL import Image

from tests.gateway_process import start_gateway
from tests.servers import start_predictor

DOWN_S = 30  # long enough for gRPC's default backoff to pass 10 s between attempts
HEALED_WITHIN_S = 3


def png(photo) -> bytes:
    out = io.BytesIO()
    Image.fromarray(photo).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def stack(weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("restart")
    model_dir = weights.model_dir("restore", "denoise")
    predictor = start_predictor("restore", model_dir, tmp)
    gateway = None
    try:
        predictor.wait()
        gateway = start_gateway({"restore": predictor.grpc}, tmp)
        yield predictor, gateway, (model_dir, tmp)
    finally:
        if gateway is not None:
            gateway.stop()
        predictor.stop()


def restore(gateway, body: bytes) -> httpx.Response:
    files = {"file": ("photo.png", body, "image/png")}
    return httpx.post(f"{gateway.url}/restore", files=files, timeout=60)


def test_health_names_the_device_before_any_request(stack):
    _, gateway, _ = stack
    report = httpx.get(f"{gateway.url}/health", timeout=10).json()["models"]["restore"]
    assert report["ready"] is True
    assert report["device"] == "cpu", report
    assert report["variant"] == "denoise"


def test_a_restarted_predictor_serves_within_3_s_of_ready(stack, astronaut):
    predictor, gateway, (model_dir, tmp) = stack
    body = png(astronaut[:64, :64])
    assert restore(gateway, body).status_code == 200

    predictor.process.kill()
    predictor.process.wait()
    down_until = time.monotonic() + DOWN_S
    while time.monotonic() < down_until:  # clients keep coming while it is down
        reply = restore(gateway, body)
        assert reply.status_code == 503, reply.text
        time.sleep(0.5)

    again = start_predictor(
        "restore", model_dir, tmp, ports=(predictor.http_port, predictor.grpc_port)
    )
    try:
        again.wait()
        ready_at = time.monotonic()
        while True:
            sent_at = time.monotonic()
            reply = restore(gateway, body)
            if reply.status_code == 200:
                break
            assert reply.status_code == 503, reply.text
            assert sent_at - ready_at < 30, "the gateway never came back to the predictor"
            time.sleep(0.1)
        # When the request that succeeded was sent, not when its work finished: the machine's
        # speed does not enter the measure.
        healed = sent_at - ready_at
        print(f"served again {healed:.2f} s after the restarted predictor was ready")
        assert healed < HEALED_WITHIN_S
        health = httpx.get(f"{gateway.url}/health", timeout=10).json()["models"]["restore"]
        assert health["ready"] is True
    finally:
        predictor.process = again.process  # the module fixture stops whichever runs
