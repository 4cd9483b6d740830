"""The REST body limit: the gRPC message limit, so that neither surface takes more than the other.

A `Content-Length` beyond it answers 413 at once, before a byte of the body is read; a body
without one (chunked) is counted as it arrives and answered 413 as soon as it passes the limit,
and the app sees it only once it is whole and within the limit.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large(limit: int, got: str) -> JSONResponse:
    return JSONResponse(
        {
            "error": f"the request body is {got}; this predictor takes at most {limit} bytes "
            "(its --grpc_max_receive_message_length): send smaller or fewer images"
        },
        status_code=413,
        headers={"Connection": "close"},
    )


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.limit:
                await too_large(self.limit, f"{int(length)} bytes")(scope, receive, send)
                return
            await self.app(scope, receive, send)  # the server holds it to its Content-Length
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            await self.app(scope, receive, send)
            return
        # Chunked: read it here, bounded, then hand it on chunk by chunk.
        chunks: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                chunks.append(message)  # the client left: the app sees it so
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await too_large(self.limit, f"over {self.limit} bytes")(scope, receive, send)
                return
            chunks.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)
