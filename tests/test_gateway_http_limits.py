"""The gateway's limits on request headers, measured with raw sockets against a real process:
431 for one oversized header or too many, 408 and a closed connection for headers that never
end, 503 beyond MAX_CONNECTIONS open connections (common/httplimits.py)."""

from __future__ import annotations

import re
import socket
import time

import pytest

from tests.gateway_process import start_gateway
from tests.hostile import check

TIMEOUT_S = 1  # the gateway's HEADER_TIMEOUT_S here; the waits below allow far more
UPLOAD_LIMIT_KB = 48  # MAX_UPLOAD_MB here


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    env = {"HEADER_TIMEOUT_S": str(TIMEOUT_S), "MAX_UPLOAD_MB": str(UPLOAD_LIMIT_KB / 1024)}
    gw = start_gateway({}, tmp_path_factory.mktemp("gw"), env=env)
    yield gw
    gw.stop()


def connect(gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=30)


def read_until_closed(conn: socket.socket) -> bytes:
    reply = b""
    try:
        while chunk := conn.recv(65536):
            reply += chunk
    except ConnectionResetError:
        pass
    return reply


def request(headers: list[str]) -> bytes:
    lines = ["GET /v2/health/live HTTP/1.1", "Host: gateway", *headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_headers_within_the_limits_are_served(gateway):
    with connect(gateway) as conn:
        conn.sendall(request([f"X-H{i}: {'v' * 100}" for i in range(90)]))
        assert read_until_closed(conn).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "headers",
    [[f"X-Big: {'v' * 20_000}"], [f"X-H{i}: v" for i in range(150)]],
    ids=["one 20 KB header", "150 headers"],
)
def test_oversized_or_too_many_headers_are_431(gateway, headers):
    with connect(gateway) as conn:
        conn.sendall(request(headers))
        reply = read_until_closed(conn)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    assert b"at most" in reply


def test_a_64_mb_header_is_refused_after_a_few_kb(gateway):
    sent = 0
    with connect(gateway) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: gateway\r\nX-Huge: ")
        chunk = b"v" * 65536
        try:
            while sent < 64 << 20:
                conn.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_until_closed(conn)
    assert sent < 64 << 20  # the server stopped reading long before
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431")
    assert gateway.is_live()


@pytest.mark.parametrize("start", [b"GET /health HTTP/1.1\r\nHost: gateway\r\n", b""])
def test_headers_that_never_end_are_closed_after_the_timeout(gateway, start):
    begun = time.monotonic()
    with connect(gateway) as conn:
        conn.sendall(start)
        reply = read_until_closed(conn)  # the socket's own timeout (30 s) fails it otherwise
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert time.monotonic() - begun >= TIMEOUT_S


def read_one_response(conn) -> bytes:
    """One whole response (head and Content-Length body): it may arrive in several pieces."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += conn.recv(65536)
    return data


def test_a_kept_alive_connection_is_timed_from_its_next_request(gateway):
    with connect(gateway) as conn:
        conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
        first = read_one_response(conn)
        assert first.startswith(b"HTTP/1.1 200")
        conn.sendall(b"GET /v2/health/live HTTP/1.1\r\n")  # and no more
        reply = read_until_closed(conn)
    assert reply.startswith(b"HTTP/1.1 408"), reply


def test_the_rest_of_a_body_answered_early_is_not_taken_for_headers(gateway):
    """An upload over the limit is answered 413 while its body still arrives; the body's later
    bytes, far more than the header limit, are still a body, and the next request on the
    connection is served."""
    chunk = b"%x\r\n" % 65536 + bytes(65536) + b"\r\n"
    with connect(gateway) as conn:
        conn.sendall(
            b"POST /restore HTTP/1.1\r\nHost: gateway\r\nContent-Type: image/png\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunk
        )
        assert read_one_response(conn).startswith(b"HTTP/1.1 413")
        conn.sendall(chunk * 4 + b"0\r\n\r\n")  # 256 KB more body, then its end
        conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
        reply = read_one_response(conn)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]


MAX_CONNECTIONS = 8


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    """A gateway with few connections allowed, whose idle ones stay open long enough to count."""
    env = {"MAX_CONNECTIONS": str(MAX_CONNECTIONS), "HEADER_TIMEOUT_S": "60"}
    gw = start_gateway({}, tmp_path_factory.mktemp("gw-bounded"), env=env)
    yield gw
    gw.stop()


def test_connections_beyond_max_connections_are_answered_503(bounded):
    outcome = check.check_connection_bound(bounded.url, MAX_CONNECTIONS)
    assert outcome["then"].startswith(b"HTTP/1.1 503") and outcome["after"] == 200
    # fewer open connections than the bound: served
    with connect(bounded) as first, connect(bounded) as second:
        for conn in (first, second):
            conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
            assert read_one_response(conn).startswith(b"HTTP/1.1 200")
    assert "Exceeded concurrency limit" in bounded.log()
