"""Limits on what an HTTP client may send before its request is whole: header size, header
count, and the time the headers take.

uvicorn offers none that fit. Its default parser here is httptools, which takes headers of any
size and number; h11's `h11_max_incomplete_event_size` bounds their size but uvicorn answers
400, not 431, and bounds no count; and no setting closes a connection whose headers never end
(`timeout_keep_alive` runs only between requests). So this HTTP protocol, uvicorn's own
(httptools, else h11) with a check in front, watches each request's bytes up to the blank line:
- more than `max_bytes` of request line and headers, or more than `max_count` header lines:
  431 Request Header Fields Too Large, and the connection closed;
- headers not whole `timeout` seconds after the connection opened (or after the request's first
  byte, on a kept-alive connection): 408 Request Timeout, and the connection closed.
Bytes after the headers (the body, a pipelined request) go to uvicorn unwatched, the rest of a
body that was answered before it was whole (413, or 429 before an upload) included.

Open connections are bounded with uvicorn's own `limit_concurrency` (MAX_CONNECTIONS): a request
that arrives while that many connections are open (its own included), or that many requests are
in flight, is answered 503 and its connection closed. A connection that sends nothing is closed
by the header timeout above, so idle ones cannot hold the places for long.
"""

from __future__ import annotations

import asyncio
import json
import os

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from .env import env_float, env_int

DEFAULT_MAX_BYTES = 16 * 1024  # what proxies allow (nginx's large_client_header_buffers: 8-32 KB)
DEFAULT_MAX_COUNT = 100
DEFAULT_TIMEOUT = 10.0
# Each connection is a file descriptor: well under a container's usual limit (1024 at least),
# leaving room for the predictor channels, spooled uploads and the job store.
DEFAULT_MAX_CONNECTIONS = 512
END = b"\r\n\r\n"


def _answer(status: str, message: str) -> bytes:
    body = json.dumps({"detail": message}).encode()
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


def limited_protocol(
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_count: int = DEFAULT_MAX_COUNT,
    timeout: float = DEFAULT_TIMEOUT,
) -> type[asyncio.Protocol]:
    too_large = _answer(
        "431 Request Header Fields Too Large",
        f"the request's headers are too large: at most {max_bytes} bytes and {max_count} "
        "headers are taken",
    )
    too_slow = _answer(
        "408 Request Timeout", f"the request's headers did not arrive within {timeout:g} s"
    )

    class LimitedHTTP(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport) -> None:
            self._in_headers = True
            self._seen = 0  # header bytes of the current request
            self._lines = 0
            self._tail = b""
            self._timer = None
            self._body_done = self._response_done = False
            super().connection_made(transport)
            self._start_timer()

        def _start_timer(self) -> None:
            self._timer = self.loop.call_later(timeout, self._refuse, too_slow)

        def _stop_timer(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _refuse(self, answer: bytes) -> None:
            self._stop_timer()
            if not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._in_headers:
                if self._timer is None:  # the first byte of a request on a kept-alive connection
                    self._start_timer()
                window = self._tail + data
                end = window.find(END)
                headers = data if end < 0 else data[: max(0, end + len(END) - len(self._tail))]
                self._seen += len(headers)
                self._lines += window[: end if end >= 0 else len(window)].count(b"\r\n") - (
                    self._tail.count(b"\r\n")
                )
                if self._seen > max_bytes or self._lines > max_count:  # the request line is one
                    self._refuse(too_large)
                    return
                if end >= 0:
                    self._in_headers = False
                    self._stop_timer()
                else:
                    self._tail = window[-3:]
            super().data_received(data)

        # The next request's headers start once this request's body is whole and its response
        # sent: an early answer (413, 503) can go out while the body is still arriving, and
        # those body bytes are not headers. httptools reports the body's end; with h11 (no
        # such callback) the response's end stands in for it.
        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._body_done = True
            self._next_request_if_done()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._response_done = True
            if not hasattr(AutoHTTPProtocol, "on_message_complete"):
                self._body_done = True
            self._next_request_if_done()

        def _next_request_if_done(self) -> None:
            if self._body_done and self._response_done:
                self._body_done = self._response_done = False
                self._in_headers, self._seen, self._lines, self._tail = True, 0, 0, b""

        def connection_lost(self, exc) -> None:
            self._stop_timer()
            super().connection_lost(exc)

    return LimitedHTTP


def from_env(env=os.environ) -> type[asyncio.Protocol]:
    """The protocol with MAX_HEADER_BYTES, MAX_HEADERS and HEADER_TIMEOUT_S from `env`."""
    return limited_protocol(
        env_int(env, "MAX_HEADER_BYTES", DEFAULT_MAX_BYTES, minimum=1),
        env_int(env, "MAX_HEADERS", DEFAULT_MAX_COUNT, minimum=1),
        env_float(env, "HEADER_TIMEOUT_S", DEFAULT_TIMEOUT),
    )


def max_connections(env=os.environ) -> int:
    """MAX_CONNECTIONS from `env` (uvicorn's limit_concurrency), else the default."""
    return env_int(env, "MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, minimum=1)
