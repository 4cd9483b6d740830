"""Prometheus metrics, served with KServe's own at /metrics (default registry)."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

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

# Jobs (CONTRACT section 6). Waits and runs can be long: the buckets go on to two hours.
_JOB_BUCKETS = (*_BUCKETS, 1800, 3600, 7200)
JOBS = Gauge(
    "photo_enhance_jobs",
    "Jobs in the job store by status (queued, running, and finished ones until JOB_TTL_S).",
    ("status",),
)
JOB_WAIT_SECONDS = Histogram(
    "photo_enhance_job_wait_seconds",
    "Jobs' wait from submission to the start of their first run, by task.",
    ("task",),
    buckets=_JOB_BUCKETS,
)
JOB_RUN_SECONDS = Histogram(
    "photo_enhance_job_run_seconds",
    "Jobs' runs from start to end (the result stored), by task and final status.",
    ("task", "status"),
    buckets=_JOB_BUCKETS,
)

# Load per task (CONTRACT section 8), what the chart's queue-based autoscaling reads: calls
# waiting in this gateway's queue (requests and job calls), calls at the predictors, and the
# predictor replicas this gateway sees up.
QUEUE_DEPTH = Gauge(
    "photo_enhance_queue_depth",
    "Predictor calls waiting in this gateway's queue, by task (requests and job calls).",
    ("task",),
)
INFLIGHT = Gauge(
    "photo_enhance_inflight",
    "Predictor calls of this gateway in flight, by task.",
    ("task",),
)
REPLICAS_UP = Gauge(
    "photo_enhance_replicas_up",
    "Predictor replicas this gateway sends calls to (known and not failed), by task.",
    ("task",),
)
