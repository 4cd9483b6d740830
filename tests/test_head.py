"""HEAD wherever GET is served, on real gateway and predictor processes: GET's status and
headers, no body (RFC 9110 9.3.2); a route that serves no GET still answers 405."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway_process import start_gateway
from tests.servers import running_predictor

GATEWAY_GETS = [
    "/health",
    "/v1/health",
    "/",
    "/metrics",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/v2/health/live",
    "/v2/health/ready",
    "/ui/app.js",
    "/ui/style.css",
]
PREDICTOR_GETS = [
    "/",
    "/metrics",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/restore",
    "/v2/models/restore/ready",
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    gw = start_gateway({}, tmp_path_factory.mktemp("gateway"))
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def predictor(weights, tmp_path_factory):
    folder = weights.model_dir("restore", "denoise")
    with running_predictor("restore", folder, tmp_path_factory.mktemp("restore")) as server:
        yield server


def assert_head_like_get(base: str, path: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        get = client.get(path)
        head = client.head(path)
        again = client.get(path)  # the connection goes on after the HEAD
    assert head.status_code == get.status_code != 405, (path, head.status_code)
    assert get.status_code == again.status_code
    assert head.content == b""
    assert head.headers.get("content-type") == get.headers.get("content-type")
    if path != "/metrics":  # its figures change between the two calls
        assert head.headers.get("content-length") == get.headers.get("content-length")


@pytest.mark.parametrize("path", GATEWAY_GETS)
def test_gateway_answers_head_like_get(gateway, path):
    assert_head_like_get(gateway.url, path)


@pytest.mark.parametrize("path", PREDICTOR_GETS)
def test_predictor_answers_head_like_get(predictor, path):
    assert_head_like_get(f"http://{predictor.http}", path)


def test_head_on_a_post_only_route_is_405_with_allow(gateway, predictor):
    reply = httpx.head(f"{gateway.url}/restore")
    assert reply.status_code == 405 and "POST" in reply.headers["allow"]
    reply = httpx.head(f"http://{predictor.http}/v2/models/restore/infer")
    assert reply.status_code == 405 and "POST" in reply.headers["allow"]


def test_head_of_an_unserved_path_is_404(gateway):
    assert httpx.head(f"{gateway.url}/v2/models/gateway").status_code == 404
