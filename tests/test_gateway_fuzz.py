"""Schemathesis against the gateway's own OpenAPI document: every answer conforms to it.

A real gateway in front of real restore and upscale predictors (generated test weights, CPU);
colorize and face-restore have no predictor here (their answers are the documented 503), which
keeps this module to two model loads. Uploads are drawn from small real images (PNG, JPEG, 16-48
px), so that requests get past decoding and reach the predictors (undecodable uploads are
tests/test_gateway_errors.py's). Schemathesis's checks run, with two replaced: 503 and 504 are
expected conditions here, not server errors (500 still fails), and a schema-valid request may
also be refused with 413 (bounds that depend on the image, which a schema cannot express).
MAX_OUTPUT_PIXELS is small so that large scales and boxes are refused (413) instead of costing
minutes of CPU. A bounded number of examples per operation keeps the module under a minute.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests import servers
from tests.gateway_process import start_gateway

EXAMPLES = 5  # per operation and mode (12 operations: 6 routes, bare and /v1)


def _image(side: int, fmt: str) -> bytes:
    rng = np.random.default_rng(side)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side + 8, 3), np.uint8)).save(out, fmt)
    return out.getvalue()


UPLOADS = st.sampled_from([_image(16, "PNG"), _image(32, "JPEG"), _image(48, "PNG")])
# A valid request answers one of these (the image's own limits, a full queue, no predictor).
ACCEPTED = {200, 413, 429, 503, 504}
schemathesis.openapi.format("binary", UPLOADS)
schemathesis.openapi.media_type("image/*", UPLOADS)


@pytest.fixture(scope="module")
def gateway(weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    started = {
        task: servers.start_predictor(task, weights.model_dir(task, variant), tmp, variant)
        for task, variant in (("restore", "denoise"), ("upscale", "x4plus"))
    }
    try:
        for predictor in started.values():
            predictor.wait(timeout=300)
        gw = start_gateway(
            {task: p.grpc for task, p in started.items()},
            tmp,
            env={"MAX_OUTPUT_PIXELS": str(128 * 128), "PREDICTOR_TIMEOUT_S": "60"},
        )
        yield gw
        gw.stop()
    finally:
        for predictor in started.values():
            predictor.stop()


@pytest.fixture(scope="module")
def api(gateway):
    return schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")


OPERATIONS = [
    (prefix + path, "GET" if path == "/health" else "POST")
    for prefix in ("", "/v1")
    for path in ("/colorize", "/restore", "/face-restore", "/upscale", "/pipeline", "/health")
]


CASES = [
    (path, method, mode)
    for path, method in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if method == "POST" or mode == GenerationMode.POSITIVE  # /health takes no parameters
]


@pytest.mark.parametrize(("path", "method", "mode"), CASES)
def test_every_answer_is_documented(api, gateway, path, method, mode):
    operation = api[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case):
        response = case.call_and_validate(
            excluded_checks=[not_a_server_error, positive_data_acceptance]
        )
        assert response.status_code != 500, response.text
        if mode == GenerationMode.POSITIVE:
            assert response.status_code in ACCEPTED, response.text

    check()
    assert gateway.process.poll() is None
