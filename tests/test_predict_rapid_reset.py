"""An HTTP/2 rapid-reset flood (HEADERS then RST_STREAM, as fast as one socket takes them) on a
real restore predictor's gRPC port while clients keep calling the gateway in front of it: every
answer is 200, 429 (its queue is full), 503 or 504, never 500; afterwards the gateway answers 200
and the predictor is still serving (predictors/v2grpc.py HARDENING). The flood lasts FLOOD_S
seconds whatever the machine's speed; hack/hostile_check.py runs the same against `make run`."""

from __future__ import annotations

import pytest

from tests.gateway_process import start_gateway
from tests.hostile import check
from tests.servers import running_predictor

FLOOD_S = 6


@pytest.fixture(scope="module")
def servers(weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flood")
    with running_predictor("restore", weights.model_dir("restore", "denoise"), tmp) as predictor:
        gateway = start_gateway({"restore": predictor.grpc}, tmp)
        yield gateway, predictor
        gateway.stop()


def test_a_rapid_reset_flood_never_makes_the_gateway_answer_500(servers):
    gateway, predictor = servers
    outcome = check.check_flood(gateway.url, predictor.grpc, "/restore", seconds=FLOOD_S)
    print(outcome)
    assert outcome["rst_pairs"] >= 1000, outcome  # it was a flood
    assert sum(outcome["statuses"].values()) >= 1, outcome  # the gateway was called meanwhile
    assert predictor.is_ready() and gateway.process.poll() is None
    assert "Traceback" not in gateway.log()
