"""HEAD wherever GET is served (RFC 9110 9.3.2), for the gateway and the predictors alike.

FastAPI's routes answer only the methods they declare (Starlette's own routes add HEAD to GET;
FastAPI's do not), so HEAD on `/health`, the probes or `/metrics` was 405. This ASGI middleware
hands the app a GET in HEAD's place and sends the GET's status and headers (Content-Length
included) with an empty body. The response ends with its headers: a streamed answer (the job
events) is not waited for, and the app is told the client has gone so it stops. A route that
serves no GET still answers 405, its Allow header saying what it does serve.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        done = False

        async def receive_nothing() -> Message:
            if done:
                return {"type": "http.disconnect"}
            return await receive()

        async def headers_only(message: Message) -> None:
            nonlocal done
            if done:
                return
            if message["type"] == "http.response.start":
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                done = True
            else:  # trailers or anything else before the start: as the app sends it
                await send(message)

        # A copy: the server reads its own scope's method to send no body for HEAD.
        await self.app({**scope, "method": "GET"}, receive_nothing, headers_only)
