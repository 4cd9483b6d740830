#!/usr/bin/env python3
"""Hostile-client checks (issue 19) against a running photo-enhance: `make run`, or the servers a
test starts (the tests load this file through tests/hostile.py and run these very functions).
127.0.0.1 addresses only.

hostile_check.py all --gateway URL --predictor-grpc HOST:PORT --predictor-http HOST:PORT
                     [--task restore] [--route /restore]
    every check below, in turn; exit status 1 when one fails
hostile_check.py pixels --predictor-grpc HOST:PORT --predictor-http HOST:PORT [--task T]
    an image over the predictor's MAX_OUTPUT_PIXELS, given by its shape only (12 bytes of data):
    400 / INVALID_ARGUMENT naming the limit, over REST and gRPC
hostile_check.py hangup --predictor-http HOST:PORT [--task restore]
    a REST inference whose client hangs up stops within about a tile: the next request does not
    wait for the abandoned one's work (sized from a measured tile)
hostile_check.py upload --gateway URL [--route /restore]
    uploads that stall after their headers hold the task's queue places; one more request gets
    429 with Retry-After before it sends a byte of its body
hostile_check.py connections --gateway URL [--connections N]
    with N connections open (MAX_CONNECTIONS, 512 by default), one more request gets 503
hostile_check.py flood --gateway URL --predictor-grpc HOST:PORT [--seconds S] [--route /restore]
    HEADERS + RST_STREAM pairs on the predictor's gRPC port (HTTP/2 rapid reset) for S seconds,
    while clients keep calling the gateway: every answer is 200, 429, 503 or 504, never 500;
    afterwards the gateway answers 200 again

(The predictor flags are spelt with dashes: KServe, imported for its protobuf, reads the command
line too, and would take `--grpc` or `--http` for its own `--grpc_port` or `--http_port`.)
Needs the project's venv (httpx, grpcio, kserve's protobuf, numpy, Pillow, h2).
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import h2.config
import h2.connection
import h2.exceptions
import httpx
import numpy as np
from PIL import Image

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
ALLOWED_UNDER_FLOOD = {200, 429, 503, 504}
TILE = 128  # the smallest tile a predictor takes (common/limits.py)
OVERLAP = 32  # restore's tile overlap (predictors/restore.py)


class CheckFailed(Exception):
    """An answer that a client could not rely on."""


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def photo(side: int, seed: int = 0) -> np.ndarray:
    """A smooth test picture with some noise, side x side RGB."""
    y, x = np.mgrid[0:side, 0:side]
    rng = np.random.default_rng(seed)
    base = np.stack([x * 255 // side, y * 255 // side, (x + y) * 127 // side], axis=-1)
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


def png(side: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(photo(side)).save(out, "PNG")
    return out.getvalue()


# --- the predictors' OIP surface ---------------------------------------------------------------


def rest_binary(task: str, shape: list[int], data: bytes, **params) -> tuple[bytes, dict]:
    """An OIP v2 REST body with the binary tensor extension, and its headers."""
    header = {
        "inputs": [
            {
                "name": "image",
                "shape": shape,
                "datatype": "UINT8",
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        "parameters": params,
    }
    text = json.dumps(header).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(text)),
        "Content-Type": "application/octet-stream",
    }
    return text + data, headers


def grpc_infer_request(task: str, shape: list[int], data: bytes, **params):
    from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest

    message = ModelInferRequest(model_name=task, id="hostile-check")
    message.inputs.add(name="image", datatype="UINT8", shape=shape)
    message.raw_input_contents.append(data)
    for key, value in params.items():
        message.parameters[key].int64_param = value
    return message


def grpc_call(address: str, message, timeout: float = 120) -> tuple[grpc.StatusCode, str]:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(address, options=options) as channel:
        call = channel.unary_unary(
            MODEL_INFER,
            request_serializer=type(message).SerializeToString,
            response_deserializer=lambda data: data,
        )
        try:
            call(message, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def check_pixels(http: str, grpc_address: str, task: str, side: int = 9400) -> list[str]:
    """A side x side image given by its shape alone: refused from the shape, naming the limit."""
    shape = [1, side, side, 3]
    body, headers = rest_binary(task, shape, bytes(12))
    reply = httpx.post(
        f"http://{http}/v2/models/{task}/infer", content=body, headers=headers, timeout=60
    )
    if reply.status_code != 400 or "MAX_OUTPUT_PIXELS" not in reply.text:
        raise CheckFailed(f"REST {shape}: {reply.status_code} {reply.text[:300]}")
    code, details = grpc_call(grpc_address, grpc_infer_request(task, shape, bytes(12)))
    if code != grpc.StatusCode.INVALID_ARGUMENT or "MAX_OUTPUT_PIXELS" not in details:
        raise CheckFailed(f"gRPC {shape}: {code.name} {details[:300]}")
    return [f"REST 400: {reply.json()['error']}", f"gRPC {code.name}: {details}"]


def tile_count(side: int, tile: int = TILE, overlap: int = OVERLAP) -> int:
    """Tiles of a square image (the tiler's rule: stride tile - overlap, last tile flush)."""
    return (-(-(side - tile) // (tile - overlap)) + 1) ** 2


def rest_infer_seconds(http: str, task: str, image: np.ndarray, **params) -> float:
    body, headers = rest_binary(task, [1, *image.shape], image.tobytes(), **params)
    start = time.monotonic()
    reply = httpx.post(
        f"http://{http}/v2/models/{task}/infer", content=body, headers=headers, timeout=600
    )
    if reply.status_code != 200:
        raise CheckFailed(f"REST infer {image.shape}: {reply.status_code} {reply.text[:300]}")
    return time.monotonic() - start


def measure_tile(http: str, task: str = "restore") -> float:
    """Seconds one TILE px tile takes (a 256 px image in 9 tiles, after a warm-up)."""
    rest_infer_seconds(http, task, photo(TILE), tile_size=TILE)
    return rest_infer_seconds(http, task, photo(256), tile_size=TILE) / tile_count(256)


def big_side(per_tile: float, min_cost_s: float, max_side: int = 8192) -> int:
    """The side (a multiple of 512) whose TILE px tiles take at least `min_cost_s`."""
    side = 1024
    while per_tile * tile_count(side) < min_cost_s:
        side += 512
        if side > max_side:
            raise CheckFailed(f"one tile takes {per_tile * 1000:.1f} ms: too fast to measure")
    return side


def hang_up_after(http: str, body: bytes, headers: dict, path: str, seconds: float) -> None:
    """Send a REST request on a raw socket, wait `seconds`, close without reading the answer."""
    host, port = _host_port(http)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((host, port), timeout=60) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {http}\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        conn.sendall(body)
        time.sleep(seconds)


def check_hangup(
    http: str, task: str = "restore", min_cost_s: float = 20, give_up_s: float = 1.5
) -> dict:
    """A big tiled REST request abandoned after `give_up_s`: the next small request waits far
    less than the big one's cost (its work stopped within about a tile)."""
    per_tile = measure_tile(http, task)
    side = big_side(per_tile, min_cost_s)
    big = photo(side)
    cost = per_tile * tile_count(side)
    body, headers = rest_binary(task, [1, side, side, 3], big.tobytes(), tile_size=TILE)
    hang_up_after(http, body, headers, f"/v2/models/{task}/infer", give_up_s)
    wait = rest_infer_seconds(http, task, photo(64))
    outcome = {
        "per_tile_s": round(per_tile, 4),
        "big_side": side,
        "big_cost_s": round(cost, 1),
        "next_wait_s": round(wait, 2),
    }
    if wait >= cost / 10:
        raise CheckFailed(f"the abandoned request's work went on: {outcome}")
    return outcome


# --- the gateway's HTTP edge -------------------------------------------------------------------


def read_reply(conn: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes or `timeout` passes without a byte."""
    conn.settimeout(timeout)
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and _complete(data):
                break
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def upload_head(gateway: str, route: str, length: int) -> bytes:
    host = gateway.split("//", 1)[-1].rstrip("/")
    return (
        f"POST {route} HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def check_upload_refused_before_body(
    gateway: str, route: str = "/restore", most: int = 64, upload_mb: float = 31
) -> dict:
    """Uploads that stall after their first KB hold the queue's places; a request that then
    sends only its headers gets 429 with Retry-After, no body sent."""
    host, port = _host_port(gateway.split("//", 1)[-1].rstrip("/"))
    length = int(upload_mb * 2**20)
    start = png(64)
    stalled: list[socket.socket] = []
    try:
        for _ in range(most):
            probe = socket.create_connection((host, port), timeout=30)
            probe.sendall(upload_head(gateway, route, length))  # headers only
            answer = read_reply(probe, timeout=0.5)
            if answer:
                probe.close()
                status = answer.split(b" ", 2)[1].decode() if answer.count(b" ") >= 2 else "?"
                if status != "429" or b"retry-after" not in answer.lower():
                    raise CheckFailed(f"headers only: {answer[:300]!r}")
                return {"stalled_uploads": len(stalled), "answer": answer.split(b"\r\n")[0]}
            probe.sendall(start[:1024])  # it stalls here, holding its place
            stalled.append(probe)
        raise CheckFailed(f"{most} stalled uploads and still no 429 before the body")
    finally:
        for conn in stalled:
            conn.close()


def check_connection_bound(gateway: str, connections: int = 512) -> dict:
    """With `connections` open and idle, a request is answered 503; once they close, 200."""
    host, port = _host_port(gateway.split("//", 1)[-1].rstrip("/"))
    idle = [socket.create_connection((host, port), timeout=30) for _ in range(connections)]
    try:
        deadline = time.monotonic() + 8  # before the idle ones time out (HEADER_TIMEOUT_S, 10 s)
        while True:
            with socket.create_connection((host, port), timeout=30) as conn:
                conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: gw\r\n\r\n")
                answer = read_reply(conn, timeout=10)
            if answer.startswith(b"HTTP/1.1 503"):
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"{connections} connections open, then: {answer[:200]!r}")
            time.sleep(0.2)
    finally:
        for conn in idle:
            conn.close()
    deadline = time.monotonic() + 30
    while (live := httpx.get(f"{gateway}/v2/health/live", timeout=10)).status_code != 200:
        if time.monotonic() > deadline:
            raise CheckFailed(f"after the connections closed: {live.status_code}")
        time.sleep(0.2)
    return {"open": connections, "then": answer.split(b"\r\n")[0], "after": live.status_code}


# --- HTTP/2 rapid reset on a predictor's gRPC port ---------------------------------------------


def _flood_connection(address: str, until: float, batch: int) -> int:
    """HEADERS + RST_STREAM pairs on one connection until `until` or it closes; returns pairs."""
    host, port = _host_port(address)
    sent = 0
    with socket.create_connection((host, port), timeout=5) as conn:
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h2c.initiate_connection()
        conn.sendall(h2c.data_to_send())
        stop = threading.Event()

        def drain() -> None:  # the server's frames, unread, would stop it writing to us
            try:
                while not stop.is_set() and conn.recv(65536):
                    pass
            except OSError:
                pass

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", MODEL_INFER),
            (":authority", address),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        try:
            while time.monotonic() < until:
                for _ in range(batch):
                    stream = h2c.get_next_available_stream_id()
                    h2c.send_headers(stream, headers)
                    h2c.reset_stream(stream, error_code=8)  # CANCEL
                conn.sendall(h2c.data_to_send())
                sent += batch
        except (OSError, h2.exceptions.H2Error):
            pass  # the server closed it, or stopped reading: the caller opens another
        finally:
            stop.set()
    return sent


def rapid_reset(address: str, seconds: float, connections: int = 2, batch: int = 500) -> int:
    """Flood `address` for `seconds` from `connections` threads, reconnecting when closed;
    returns the HEADERS + RST_STREAM pairs sent."""
    until = time.monotonic() + seconds

    def one() -> int:
        total = 0
        while time.monotonic() < until:
            try:
                total += _flood_connection(address, until, batch)
            except OSError:
                time.sleep(0.05)  # refused or reset while connecting: try again
        return total

    with ThreadPoolExecutor(connections) as pool:
        return sum(pool.map(lambda _: one(), range(connections)))


def check_flood(
    gateway: str,
    grpc_address: str,
    route: str = "/restore",
    seconds: float = 3.0,
    clients: int = 8,
    timeout: float = 120,
) -> dict:
    """Gateway requests during a rapid-reset flood of the predictor: none is a 500."""
    body = png(64)
    statuses: Counter = Counter()
    until = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=gateway, timeout=timeout) as http:
            while time.monotonic() < until:
                files = {"file": ("photo.png", body, "image/png")}
                statuses[http.post(route, files=files).status_code] += 1

    with ThreadPoolExecutor(clients + 1) as pool:
        flood = pool.submit(rapid_reset, grpc_address, seconds)
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
        pairs = flood.result()
    after = _until_ok(gateway, route, body, timeout)
    outcome = {"rst_pairs": pairs, "statuses": dict(statuses), "after": after}
    if set(statuses) - ALLOWED_UNDER_FLOOD or after != 200:
        raise CheckFailed(f"under a rapid-reset flood: {outcome}")
    return outcome


def _until_ok(gateway: str, route: str, body: bytes, within: float) -> int:
    deadline = time.monotonic() + within
    while True:
        files = {"file": ("photo.png", body, "image/png")}
        status = httpx.post(f"{gateway}{route}", files=files, timeout=within).status_code
        if status == 200 or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


# --- the command line ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    commands = {
        "pixels": ("predictor-http", "predictor-grpc"),
        "hangup": ("predictor-http",),
        "upload": ("gateway",),
        "connections": ("gateway",),
        "flood": ("gateway", "predictor-grpc"),
        "all": ("gateway", "predictor-grpc", "predictor-http"),
    }
    for name, needs in commands.items():
        p = sub.add_parser(name)
        for need in needs:
            p.add_argument(f"--{need}", required=True)
        p.add_argument("--task", default="restore", help="the predictor's task")
        p.add_argument("--route", default="/restore", help="the gateway route to load")
        p.add_argument("--seconds", type=float, default=3.0, help="flood: how long")
        p.add_argument("--connections", type=int, default=512, help="MAX_CONNECTIONS")
    args = parser.parse_args()
    gateway = getattr(args, "gateway", "").rstrip("/")
    checks = {
        "pixels": lambda: check_pixels(args.predictor_http, args.predictor_grpc, args.task),
        "hangup": lambda: check_hangup(args.predictor_http, args.task),
        "upload": lambda: check_upload_refused_before_body(gateway, args.route),
        "connections": lambda: check_connection_bound(gateway, args.connections),
        "flood": lambda: check_flood(gateway, args.predictor_grpc, args.route, args.seconds),
    }
    chosen = list(checks) if args.cmd == "all" else [args.cmd]
    failed = 0
    for name in chosen:
        start = time.monotonic()
        try:
            outcome = checks[name]()
            print(f"ok   {name} ({time.monotonic() - start:.1f} s): {outcome}", flush=True)
        except CheckFailed as exc:
            failed += 1
            print(f"FAIL {name}: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
