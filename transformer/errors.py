"""The one error type routes raise; it becomes `{"detail": ...}` with its status (CONTRACT 1)."""

from __future__ import annotations


class GatewayError(Exception):
    """A failure the client can act on: status code, a readable detail and extra headers.
    `internal`: what only the log gets (predictor addresses, gRPC status names)."""

    def __init__(
        self,
        status: int,
        detail: str,
        headers: dict[str, str] | None = None,
        internal: str = "",
    ):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.internal = internal

    def for_log(self) -> str:
        return f"{self.detail} ({self.internal})" if self.internal else self.detail


def bad_request(detail: str) -> GatewayError:
    return GatewayError(400, detail)


def too_large(detail: str) -> GatewayError:
    return GatewayError(413, detail)


def unsupported_type(detail: str) -> GatewayError:
    return GatewayError(415, detail)


def not_offered(task: str, how: str) -> GatewayError:
    """503 without Retry-After: this gateway has no predictor for the task, and waiting will not
    give it one (CONTRACT 1). `how`: what the operator would set."""
    return GatewayError(
        503,
        f"this server does not offer {task}: no {task} predictor is configured ({how}); "
        "retrying will not help, use another task or another server",
    )
