"""Prometheus metrics, served with KServe's own at /metrics (default registry)."""

from __future__ import annotations

from prometheus_client import Histogram

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300, 600)

REQUEST_SECONDS = Histogram(
    "photo_enhance_request_seconds",
    "Gateway requests by route and HTTP status, upload to encoded answer.",
    ("route", "status"),
    buckets=_BUCKETS,
)
PREDICTOR_SECONDS = Histogram(
    "photo_enhance_predictor_seconds",
    "V2 gRPC inference calls from the gateway to a predictor, by task and outcome.",
    ("task", "outcome"),
    buckets=_BUCKETS,
)
