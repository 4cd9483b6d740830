"""The gateway's answers to bad input and to predictors that are down or silent (CONTRACT 1).

A real gateway process; its predictors are a closed port (upscale), a TCP peer that accepts and
never answers (colorize, to hit the timeout) and no address at all (restore, face-restore).
No predictor process is needed: every request here fails before or at the predictor call.
"""

from __future__ import annotations

import re
import time

import httpx
import numpy as np
import pytest

from tests.gateway_process import (
    encoded,
    start_gateway,
    start_silent_peer,
    start_wrong_predictor,
)
from tests.servers import free_port

TIMEOUT_S = 1.5
ROUTES = ("/colorize", "/restore", "/face-restore", "/upscale", "/pipeline")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateway-errors")
    peer, silent = start_silent_peer()
    wrong, wrong_address = start_wrong_predictor("face-restore", tmp / "wrong.log")
    closed = f"127.0.0.1:{free_port()}"
    gw = start_gateway(
        {"colorize": silent, "upscale": closed, "face-restore": wrong_address},
        tmp,
        env={"PREDICTOR_TIMEOUT_S": str(TIMEOUT_S)},
    )
    yield gw
    gw.stop()
    for process in (peer, wrong):
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def photo_png(astronaut) -> bytes:
    return encoded(astronaut[:64, :64])


def upload(client, route, data, filename="photo.png", content_type="image/png", **params):
    return client.post(route, params=params, files={"file": (filename, data, content_type)})


def assert_detail(reply, status):
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    detail = reply.json()["detail"]
    assert isinstance(detail, str) and len(detail) > 10
    return detail


def assert_still_healthy(client, photo_png):
    assert client.get("/v2/health/live").status_code == 200
    # A good image still goes all the way to the (absent) predictor.
    assert upload(client, "/restore", photo_png).status_code == 503


def test_empty_upload_is_400(client, photo_png):
    assert "empty" in assert_detail(upload(client, "/restore", b""), 400)
    raw = client.post("/restore", content=b"", headers={"content-type": "image/png"})
    assert "empty" in assert_detail(raw, 400)
    assert_still_healthy(client, photo_png)


def test_random_bytes_are_415(client, photo_png):
    data = np.random.default_rng(1).bytes(50_000)
    assert "accepted type" in assert_detail(upload(client, "/upscale", data), 415)
    assert_still_healthy(client, photo_png)


def test_text_named_jpg_is_415(client, photo_png):
    text = b"this is not a photo, whatever its name says\n" * 40
    reply = upload(client, "/colorize", text, filename="holiday.jpg", content_type="image/jpeg")
    assert "JPEG, PNG, WebP, BMP or TIFF" in assert_detail(reply, 415)
    assert_still_healthy(client, photo_png)


def test_truncated_jpeg_is_400(client, astronaut, photo_png):
    jpeg = encoded(astronaut, "JPEG")
    reply = upload(client, "/restore", jpeg[: len(jpeg) // 2], "cut.jpg", "image/jpeg")
    assert "JPEG" in assert_detail(reply, 400)
    assert_still_healthy(client, photo_png)


def test_png_claiming_60000_squared_is_413(client, photo_png):
    from tests.test_transformer_images import png_claiming

    start = time.monotonic()
    reply = upload(client, "/upscale", png_claiming(60000, 60000))
    assert "60000x60000" in assert_detail(reply, 413)
    assert time.monotonic() - start < 5  # refused from the header, nothing decoded
    assert_still_healthy(client, photo_png)


def test_upload_over_32_mb_is_413(client, photo_png):
    big = photo_png + bytes(33 * 1024 * 1024)  # a valid PNG start, 33 MB in all
    assert "MAX_UPLOAD_MB" in assert_detail(upload(client, "/restore", big), 413)
    raw = client.post("/restore", content=big, headers={"content-type": "image/png"})
    assert "MAX_UPLOAD_MB" in assert_detail(raw, 413)
    assert_still_healthy(client, photo_png)


def test_upload_over_the_limit_without_content_length_is_413(client, photo_png):
    def chunks():  # chunked transfer: the size is only known while reading
        for _ in range(34):
            yield bytes(1024 * 1024)

    reply = client.post("/restore", content=chunks(), headers={"content-type": "image/png"})
    assert "MAX_UPLOAD_MB" in assert_detail(reply, 413)
    assert_still_healthy(client, photo_png)


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("/colorize", {"render_factor": 0}),
        ("/colorize", {"render_factor": 101}),
        ("/colorize", {"render_factor": "many"}),
        ("/restore", {"tile_size": -1}),
        ("/face-restore", {"fidelity": 1.5}),
        ("/face-restore", {"fidelity": -0.1}),
        ("/face-restore", {"upscale": 0}),
        ("/face-restore", {"upscale": 5}),
        ("/upscale", {"scale": 0}),
        ("/upscale", {"scale": 9}),
        ("/upscale", {"tile_size": -5}),
        ("/pipeline", {"width": 0}),
        ("/pipeline", {"height": 100000}),
        ("/pipeline", {"fidelity": 2}),
        ("/pipeline", {"render_factor": 0}),
        ("/pipeline", {"restore_tile_size": -1}),
        ("/pipeline", {"upscale_tile_size": -1}),
        ("/pipeline", {"colorize": "maybe"}),
    ],
)
def test_out_of_range_parameters_are_422(client, photo_png, route, params):
    reply = upload(client, route, photo_png, **params)
    assert reply.status_code == 422, reply.text
    (error,) = reply.json()["detail"]
    assert error["loc"] == ["query", next(iter(params))]
    assert error["msg"]


@pytest.mark.parametrize("route", [*ROUTES, *(f"/v1{r}" for r in ROUTES)])
def test_unknown_query_parameter_is_422_naming_it(client, photo_png, route):
    # A typo must not fall back to a default (/upscale?scal=2 answering x4), on a good request.
    reply = upload(client, route, photo_png, scal=2, output_format="png")
    assert reply.status_code == 422, reply.text
    (error,) = reply.json()["detail"]
    assert error["loc"] == ["query", "scal"] and error["type"] == "extra_forbidden"
    assert f"unknown parameter 'scal' for {route}" in error["msg"]
    assert "output_format" in error["msg"]  # what it takes
    # Several: one item each; a known one beside them is not named.
    reply = upload(client, route, photo_png, a=1, b=2, output_format="jpg")
    assert [e["loc"] for e in reply.json()["detail"]] == [["query", "a"], ["query", "b"]]


def test_unknown_query_parameter_on_health_is_422_and_pages_take_any(client):
    for route in ("/health", "/v1/health"):
        reply = client.get(route, params={"verbose": 1})
        assert reply.status_code == 422
        assert reply.json()["detail"][0]["loc"] == ["query", "verbose"]
        assert "it takes none" in reply.json()["detail"][0]["msg"]
    for page in ("/", "/docs", "/redoc", "/openapi.json"):  # a shared link may carry utm_*
        assert client.get(page, params={"utm_source": "mail"}).status_code == 200, page


@pytest.mark.parametrize("route", ROUTES)
def test_unknown_output_format_is_422(client, photo_png, route):
    reply = upload(client, route, photo_png, output_format="gif")
    assert reply.status_code == 422
    assert "png" in reply.json()["detail"][0]["msg"]


def test_missing_file_field_is_400(client, photo_png):
    reply = client.post("/restore", files={"image": ("a.png", photo_png, "image/png")})
    detail = assert_detail(reply, 400)
    assert "'file'" in detail and "image" in detail


def test_other_content_types_are_415(client, photo_png):
    reply = client.post("/restore", json={"image": "base64..."})
    assert "application/json" in assert_detail(reply, 415)
    assert "no image" in assert_detail(client.post("/restore"), 400)


def test_webp_too_large_for_the_answer_is_400_before_inference(client, astronaut):
    big = encoded(astronaut[:, :], "PNG")  # 512 px x 8 = 4096: fine; a 2048 px x 8 is not
    assert upload(client, "/upscale", big, scale=8, output_format="webp").status_code == 503
    huge = encoded(np.zeros((2048, 2048, 3), np.uint8))
    reply = upload(client, "/upscale", huge, scale=8, output_format="webp")
    assert "16383" in assert_detail(reply, 400)


def test_unreachable_predictor_is_503_with_retry_after(client, gateway, photo_png):
    reply = upload(client, "/upscale", photo_png, scale=2)
    detail = assert_detail(reply, 503)
    assert detail.startswith("the upscale model is not available: its server cannot be reached")
    assert int(reply.headers["retry-after"]) > 0
    # The predictor's address and the gRPC status are for the operator: in the log, not the answer.
    assert "127.0.0.1" not in detail and "UNAVAILABLE" not in detail
    assert re.search(
        r"upscale: 503 .*its predictor at 127\.0\.0\.1:\d+ answered UNAVAILABLE", gateway.log()
    )


def test_task_not_offered_is_503_without_retry_after_naming_the_setting(client, photo_png):
    reply = upload(client, "/restore", photo_png)
    detail = assert_detail(reply, 503)
    assert detail.startswith("this server does not offer restore")
    assert "PREDICTOR_RESTORE" in detail and "retry later" not in detail
    assert "retry-after" not in reply.headers  # waiting will not bring it
    # The pipeline refuses before its first step when a step it needs is not offered: here
    # restore (second), while colorize (first) would have waited for a silent predictor.
    reply = upload(client, "/pipeline", photo_png, colorize=True, face_restore=False)
    assert assert_detail(reply, 503).startswith("this server does not offer restore")
    assert "retry-after" not in reply.headers


def test_silent_predictor_is_504_after_the_timeout(client, photo_png):
    start = time.monotonic()
    reply = upload(client, "/colorize", photo_png)
    elapsed = time.monotonic() - start
    assert "PREDICTOR_TIMEOUT_S" in assert_detail(reply, 504)
    assert TIMEOUT_S * 0.9 < elapsed < TIMEOUT_S + 5


def test_a_broken_predictor_answer_is_500_logged_not_leaked(client, gateway, photo_png):
    reply = upload(client, "/face-restore", photo_png)
    detail = assert_detail(reply, 500)
    assert "FP32" not in detail and "Traceback" not in reply.text
    log = gateway.log()
    assert "face-restore failed" in log and "Traceback" in log and "FP32 [1, 2]" in log
    assert_still_healthy(client, photo_png)


def test_health_reports_each_model(client):
    reply = client.get("/health")
    assert reply.status_code == 200
    body = reply.json()
    assert set(body["models"]) == {"colorize", "restore", "face-restore", "upscale"}
    assert body["status"] == "degraded"  # only the broken face-restore server says ready
    for task, entry in body["models"].items():
        assert entry["ready"] is (task == "face-restore")
        assert entry["variant"] and entry["device"]
        about = entry["about"]  # for people: what the model does and its licence
        assert about["model"] and about["description"] and about["licence"]
    assert body["models"]["upscale"]["variant"] == "x4plus"
    states = {task: entry["state"] for task, entry in body["models"].items()}
    assert states == {
        "colorize": "starting",  # never ready since the gateway started
        "upscale": "starting",
        "restore": "not offered",
        "face-restore": "ready",
    }
    face = body["models"]["face-restore"]["about"]
    assert face["model"] == "CodeFormer" and face["commercial_use"] is False
    assert "non-commercial" in face["licence"]
    assert client.get("/v1/health").json()["models"].keys() == body["models"].keys()


def test_v1_aliases_serve_the_same_handlers(client, photo_png):
    for route in ROUTES:
        assert upload(client, "/v1" + route, photo_png, output_format="gif").status_code == 422
    assert upload(client, "/v1/upscale", photo_png).status_code == 503


def test_docs_openapi_and_metrics(client):
    schema = client.get("/openapi.json").json()
    for route in (*ROUTES, "/health"):
        assert route in schema["paths"] and "/v1" + route in schema["paths"]
    body = schema["paths"]["/upscale"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/*" in body
    params = {p["name"] for p in schema["paths"]["/pipeline"]["post"]["parameters"]}
    assert {"restore", "face_restore", "colorize", "upscale", "width", "height"} <= params
    assert {"render_factor", "restore_tile_size", "fidelity", "upscale_tile_size"} <= params
    for page in ("/docs", "/redoc"):
        reply = client.get(page)
        assert reply.status_code == 200 and "openapi.json" in reply.text
        # Offline and behind a path prefix: only relative URLs, files from the package.
        assert not re.search(r"(src|href|url)\s*[=:]\s*['\"]?(https?:)?/", reply.text), page
        for asset in re.findall(r"(?:src|href)=\"(docs/assets/[^\"]+)\"", reply.text):
            served = client.get(f"/{asset}")
            assert served.status_code == 200 and len(served.content) > 1000, asset
            assert (
                b"cdn.redoc.ly" not in served.content and b"fonts.googleapis" not in served.content
            )
    metrics = client.get("/metrics").text
    assert 'photo_enhance_request_seconds_count{route="upscale",status="503"}' in metrics


def test_no_internal_details_leak(client, photo_png):
    """Every non-2xx answer so far was a JSON detail; none carried a traceback."""
    for route in ROUTES:
        extra = {"colorize": False} if route == "/pipeline" else {}
        reply = upload(client, route, photo_png, **extra)
        assert reply.status_code in (500, 503, 504)
        assert "Traceback" not in reply.text and "grpc" not in reply.text.lower()
