"""One logging setup for the gateway and the predictors: `LOG_FORMAT=text|json`, `LOG_LEVEL`.

Every record goes to stderr through the root logger, KServe's and uvicorn's included (their own
handlers are removed so that nothing is printed twice and everything has the same shape), and so
do Python warnings (logger `py.warnings`). JSON
lines come from python-json-logger: a plain `logging.Formatter`, so no call site changes.
"""

from __future__ import annotations

import logging
import logging.config
import os

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s.%(msecs)03d %(process)d %(name)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# Loggers that KServe and uvicorn configure with their own handlers; ours replace them.
THIRD_PARTY = ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access")


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
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "default",
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
