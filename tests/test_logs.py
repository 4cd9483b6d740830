"""common/logs.py: health probes' lines are DEBUG, everything else keeps its level."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.servers import ROOT

# The lines KServe, uvicorn and KServe's gRPC interceptor write, as they write them.
EMIT = """
import logging, sys
from common.logs import configure_logging
configure_logging(sys.argv[1])
access = logging.getLogger("uvicorn.access")
line = '%s - "%s %s HTTP/%s" %d'
access.info(line, "127.0.0.1:1", "GET", "/v2/health/ready", "1.1", 200)
access.info(line, "127.0.0.1:1", "GET", "/v2/models/upscale/ready", "1.1", 503)
access.info(line, "127.0.0.1:1", "GET", "/health?x=1", "1.1", 200)
access.info(line, "127.0.0.1:1", "POST", "/upscale", "1.1", 200)
trace = logging.getLogger("kserve.trace")
trace.info("kserve.io.v2.health.live: 0.001 ['http_status:200']")
trace.info("kserve.io.predictors.surface.model_ready: 0.001 ['http_status:503']")
trace.info("kserve.io.upscale: 2.5 ['http_status:200']")
kserve = logging.getLogger("kserve")
kserve.info("grpc method: /inference.GRPCInferenceService/ModelReady")
kserve.info("grpc method: /inference.GRPCInferenceService/ModelInfer")
access.warning(line, "127.0.0.1:1", "GET", "/v2/health/live", "1.1", 500)
"""
PROBES = (
    "/v2/health/ready",
    "/v2/models/upscale/ready",
    "/health?x=1",
    "v2.health.live",
    "model_ready",
    "ModelReady",
)
OTHERS = ("POST /upscale", "kserve.io.upscale", "ModelInfer", "WARNING")


def emitted(level: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", EMIT, level], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.splitlines()


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_probes_are_debug_lines_and_the_rest_keep_their_level(level):
    lines = emitted(level)
    for probe in PROBES:
        shown = [line for line in lines if probe in line and " WARNING " not in line]
        if level == "INFO":
            assert shown == [], probe
        else:
            assert len(shown) == 1 and " DEBUG " in shown[0], (probe, lines)
    for other in OTHERS:
        assert any(other in line for line in lines), (other, lines)
    assert any(" INFO " in line and "POST /upscale" in line for line in lines)
    assert any(" WARNING " in line and "/v2/health/live" in line for line in lines)  # a failure
