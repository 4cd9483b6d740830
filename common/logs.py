"""One logging setup for the gateway and the predictors: `LOG_FORMAT=text|json`, `LOG_LEVEL`.

Every record goes to stderr through the root logger, KServe's and uvicorn's included (their own
handlers are removed so that nothing is printed twice and everything has the same shape), and so
do Python warnings (logger `py.warnings`). JSON
lines come from python-json-logger: a plain `logging.Formatter`, so no call site changes.

Health probes are logged at DEBUG (`ProbesAtDebug`): the kubelet probes every container every
5-20 s, `make run` polls the gateway's /health while the models load, and each probe made up to
three INFO lines per server (uvicorn's access line, KServe's two timing lines, KServe's gRPC
method line), more than half of a quiet log. With LOG_LEVEL=DEBUG they are there, as DEBUG.
"""

from __future__ import annotations

import logging
import logging.config
import os
import re

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s.%(msecs)03d %(process)d %(name)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# Loggers that KServe and uvicorn configure with their own handlers; ours replace them.
THIRD_PARTY = ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access")

# The probes' HTTP paths: KServe's V2 health (both servers), a model's readiness (the predictors'
# readiness probe) and the gateway's /health report.
PROBE_PATH = re.compile(r"/v2/health/(live|ready)|/v2/models/[^/]+/ready|(/v1)?/health")
# KServe's timing lines name the route by its handler (`...v2_endpoints.live`,
# `...surface.model_ready`, `...routes.health`) or, failing that, by its path (`kserve.io.v2.health.
# ready`): either way the last part says it is a probe's.
PROBE_TIMING = re.compile(r"kserve\.io\.(\S+\.)?(live|ready|server_ready|model_ready|health): ")
# KServe's gRPC servers log each call's method (the gateway's /health asks ModelReady).
PROBE_GRPC = re.compile(
    r"grpc method: /inference\.GRPCInferenceService/(ServerLive|ServerReady|ModelReady)"
)


def is_probe(record: logging.LogRecord) -> bool:
    """Whether `record` is one of the lines a health probe makes at INFO."""
    if record.levelno != logging.INFO:
        return False
    if record.name == "uvicorn.access":
        # uvicorn's args: client address, method, path with query, HTTP version, status
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) >= 3 and args[1] in ("GET", "HEAD"):
            return PROBE_PATH.fullmatch(str(args[2]).split("?", 1)[0]) is not None
        return False
    if record.name == "kserve.trace":
        return PROBE_TIMING.match(record.getMessage()) is not None
    if record.name == "kserve":
        return PROBE_GRPC.fullmatch(record.getMessage()) is not None
    return False


class ProbesAtDebug(logging.Filter):
    """On the handler: a probe's INFO line becomes a DEBUG line, printed only when the logger
    it came from is enabled for DEBUG (LOG_LEVEL=DEBUG). Warnings and errors are untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_probe(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _formatter(log_format: str) -> dict:
    if log_format == "json":
        return {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "{levelname}{name}{process}{message}",
            "style": "{",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",  # ISO 8601, UTC
        }
    return {"format": TEXT_FORMAT, "datefmt": DATE_FORMAT}


def configure_logging(level: str | None = None) -> None:
    """Log to stderr in LOG_FORMAT (`text`, the default, or `json`: one JSON object per line)
    at `level`, else LOG_LEVEL, else INFO. Call it once, before KServe's ModelServer is built
    (KServe then keeps this configuration). A bad value raises ValueError naming the variable."""
    log_format = os.environ.get("LOG_FORMAT", "").strip().lower() or "text"
    if log_format not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, got {log_format!r}")
    level = (level or os.environ.get("LOG_LEVEL", "").strip() or "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ValueError(f"LOG_LEVEL must be a logging level such as INFO, got {level!r}")
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"default": _formatter(log_format)},
            "filters": {"probes_at_debug": {"()": ProbesAtDebug}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "default",
                    "filters": ["probes_at_debug"],
                    "stream": "ext://sys.stderr",
                }
            },
            "root": {"handlers": ["stderr"], "level": level},
            "loggers": {
                name: {"handlers": [], "propagate": True, "level": level} for name in THIRD_PARTY
            },
        }
    )
    logging.captureWarnings(True)
