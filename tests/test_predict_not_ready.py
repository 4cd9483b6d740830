"""A predictor that is not ready answers probes and requests in one quiet line each, in JSON logs.

One real process, pointed at an empty folder: it stays live and never becomes ready.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.servers import start_predictor
from tests.v2clients import V2Error, infer_grpc

PROBES = 5


@pytest.fixture(scope="module")
def not_ready(tmp_path_factory):
    folder = tmp_path_factory.mktemp("empty")
    server = start_predictor("restore", folder, folder, extra_env={"LOG_FORMAT": "json"})
    try:
        server.wait(ready=False)
        yield server
    finally:
        server.stop()


def log_records(server) -> list[dict]:
    return [json.loads(line) for line in server.log().splitlines() if line.strip()]


def test_readiness_says_why_and_logs_no_traceback(not_ready):
    before = len(log_records(not_ready))
    for _ in range(PROBES):
        reply = httpx.get(f"http://{not_ready.http}/v2/models/restore/ready")
        assert reply.status_code == 503
        assert "NAFNet-SIDD-width64.pth" in reply.json()["error"]  # what is missing
        assert httpx.get(f"http://{not_ready.http}/v2/health/ready").status_code == 503
    new = log_records(not_ready)[before:]
    assert len(new) <= 2 * PROBES  # at most one line per probe (the access line)
    assert not any("Traceback" in record["message"] or "exc_info" in record for record in new)


def test_requests_get_unavailable_without_a_traceback(not_ready):
    with pytest.raises(V2Error, match=r"UNAVAILABLE.*not ready.*NAFNet-SIDD-width64.pth"):
        infer_grpc(not_ready.grpc, "restore", np.zeros((8, 8, 3), np.uint8))
    payload = {"inputs": [{"name": "image", "shape": [1, 1, 1, 3], "datatype": "UINT8",
                           "data": [0, 0, 0]}]}  # fmt: skip
    reply = httpx.post(f"http://{not_ready.http}/v2/models/restore/infer", json=payload)
    assert reply.status_code == 503 and "not ready" in reply.json()["error"]
    assert "Traceback" not in not_ready.log()
    assert all(isinstance(record, dict) for record in log_records(not_ready))
