"""REST calls cancelled when their client hangs up, as gRPC calls are (cancel.py).

uvicorn notices a closed connection, but nothing tells the handler: a REST inference whose
client left ran to its end for nobody. This ASGI middleware reads the request body for the app,
then listens for `http.disconnect` while the app works; when it comes first, the app's task is
cancelled, which `cancel.run_in_thread` turns into a stop at the next tile, face or image (or
no start at all for a request still queued). The app gets the body as the server gave it, then,
if it asks again, the disconnect when it happens.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body: list[Message] = []
        while True:  # bounded by bodylimit.BodyLimit, outside this middleware
            message = await receive()
            body.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        gone = asyncio.Event()
        answered = False

        async def replay() -> Message:
            if body:
                return body.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def sending(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True  # uvicorn's receive says "disconnect" from now on
            await send(message)

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        work = asyncio.ensure_future(self.app(scope, replay, sending))
        listener = asyncio.ensure_future(listen())
        try:
            await asyncio.wait((work, listener), return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and not answered:
                log.info("%s: the client hung up; cancelling its request", scope["path"])
                work.cancel()
            await asyncio.gather(work, return_exceptions=True)
        except BaseException:  # this request's own task was cancelled (the server stops)
            work.cancel()
            raise
        finally:
            listener.cancel()
        if not work.cancelled():
            work.result()  # the app's own exceptions, as without this middleware
