"""Bounded and stoppable work on one restore predictor (NAFNet, generated weights), a real process:
tiny tiles refused up front, abandoned requests (gRPC and REST) stopped within a tile, requests
whose deadline passed in the queue dropped, model load/unload not served, and SIGTERM drained
within a grace.

The "big" request is a tiled restore with 128 px tiles, sized on this machine: one tile's cost is
measured (a 256 px request, 9 tiles), and the photo is made large enough (2048 px at least) to
take MIN_BIG_COST_S. The "small" one is a 64 px photo in one piece. Waits are asserted against
the big request's cost, never against a fixed time. SIGTERM comes last: it ends the process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import grpc
import httpx
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from predictors.shutdown import CANCEL_SETTLE_SECONDS
from tests.hostile import check
from tests.servers import running_predictor
from tests.v2clients import CHANNEL, V2Error, infer_grpc

TILE = 128  # the floor (common/limits.py)
MIN_BIG_SIDE = 2048
MAX_BIG_SIDE = 8192
# Long enough to tell stopping (a tile) from finishing at a tenth of it, and to outlast the grace.
MIN_BIG_COST_S = 20
GRACE = 4  # SHUTDOWN_GRACE_SECONDS


def tile_count(side: int, tile: int = TILE, overlap: int = 32) -> int:
    """Tiles of a square image (the tiler's rule: stride tile - overlap, last tile flush)."""
    return (-(-(side - tile) // (tile - overlap)) + 1) ** 2


def infer_request(image: np.ndarray, **params: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="restore", id="cancel-test")
    tensor = request.inputs.add(name="image", datatype="UINT8", shape=[1, *image.shape])
    del tensor  # the data travels in raw_input_contents
    request.raw_input_contents.append(np.ascontiguousarray(image).tobytes())
    for key, value in params.items():
        request.parameters[key].int64_param = value
    return request


@pytest.fixture(scope="module")
def restore(weights, tmp_path_factory):
    with running_predictor(
        "restore",
        weights.model_dir("restore", "denoise"),
        tmp_path_factory.mktemp("cancel"),
        # DEBUG: the log says when a request is accepted (counted as running or queued).
        # One thread: with both cores busy elsewhere, torch's two threads spin at each barrier
        # waiting for each other and a tile's cost swung tenfold (0.13 to 1.3 s) between the
        # measure and the test; one thread keeps a steady share of a core.
        extra_env={
            "SHUTDOWN_GRACE_SECONDS": str(GRACE),
            "LOG_LEVEL": "DEBUG",
            "OMP_NUM_THREADS": "1",
        },
    ) as server:
        yield server


@pytest.fixture(scope="module")
def per_tile(restore, astronaut):
    """Seconds one 128 px tile takes on this machine (a 256 px photo: 9 tiles)."""
    sample = astronaut[:256, :256]
    infer_grpc(restore.grpc, "restore", sample[:128, :128], tile_size=TILE)  # warm up
    start = time.monotonic()
    infer_grpc(restore.grpc, "restore", sample, tile_size=TILE)
    return (time.monotonic() - start) / tile_count(256)


@pytest.fixture(scope="module")
def photos(astronaut, per_tile):
    """(big, small): big is the astronaut tiled to the side whose tiles take MIN_BIG_COST_S."""
    side = MIN_BIG_SIDE
    while per_tile * tile_count(side) < MIN_BIG_COST_S:
        side += 512
        assert side <= MAX_BIG_SIDE, f"one tile takes {per_tile * 1000:.1f} ms: too fast to test"
    big = np.tile(astronaut, (side // 512, side // 512, 1))
    return big, astronaut[200:264, 200:264].copy()


@pytest.fixture(scope="module")
def big_cost(photos, per_tile):
    """Seconds the big tiled request would take: its tiles times one tile's measured cost."""
    return per_tile * tile_count(len(photos[0]))


def small_wait(restore, small) -> float:
    start = time.monotonic()
    out, _ = infer_grpc(restore.grpc, "restore", small)
    assert out.shape == small.shape
    return time.monotonic() - start


async def abandon(address: str, request, *, deadline: float | None, cancel_after: float | None):
    """Send `request` and give up on it (deadline or explicit cancel); returns the status code."""
    async with grpc.aio.insecure_channel(address, options=CHANNEL) as channel:
        call = GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=deadline)
        if cancel_after is not None:
            await asyncio.sleep(cancel_after)  # the call is running on the server meanwhile
            call.cancel()
        try:
            await call
        except grpc.RpcError as exc:
            return exc.code()
        except asyncio.CancelledError:
            return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK


def test_tiny_tiles_are_refused_before_any_work(restore, photos):
    _, small = photos
    for tile_size in (1, 8, 127):
        with pytest.raises(V2Error, match=r"INVALID_ARGUMENT.*'tile_size' must be 0 .*least 128"):
            infer_grpc(restore.grpc, "restore", small, tile_size=tile_size)
    assert infer_grpc(restore.grpc, "restore", small, tile_size=TILE)[0].shape == small.shape


def test_model_load_and_unload_are_not_served(restore, photos):
    for action in ("load", "unload"):
        reply = httpx.post(f"http://{restore.http}/v2/repository/models/restore/{action}")
        assert reply.status_code == 404 and "not served" in reply.json()["error"]
    with grpc.insecure_channel(restore.grpc) as channel:
        stub = GRPCInferenceServiceStub(channel)
        for call, message in (
            (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="restore")),
            (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="restore")),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call(message)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert restore.is_ready()
    assert infer_grpc(restore.grpc, "restore", photos[1])[0].shape == photos[1].shape


@pytest.mark.parametrize(
    "how", [{"deadline": 1.5, "cancel_after": None}, {"deadline": None, "cancel_after": 1.5}]
)
def test_next_request_waits_at_most_a_tile_after_an_abandoned_one(restore, photos, big_cost, how):
    big, small = photos
    assert big_cost >= MIN_BIG_COST_S
    code = asyncio.run(abandon(restore.grpc, infer_request(big, tile_size=TILE), **how))
    assert code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
    wait = small_wait(restore, small)
    print(f"abandoned {how}: big request ~{big_cost:.1f} s, the next small one waited {wait:.2f} s")
    # Finishing the big request would take big_cost - 1.5 s more; one tile is far under 1/100.
    assert wait < big_cost / 10, (wait, big_cost)
    assert "stopping its work" in restore.log()


def test_a_request_whose_deadline_passed_in_the_queue_never_starts(restore, photos, big_cost):
    big, small = photos

    async def both():
        request = infer_request(big, tile_size=TILE)
        seen = requests_seen(restore)
        running = asyncio.create_task(abandon(restore.grpc, request, deadline=3, cancel_after=None))
        await asyncio.to_thread(until, lambda: requests_seen(restore) == seen + 1)
        queued = abandon(restore.grpc, request, deadline=1, cancel_after=None)
        return await asyncio.gather(running, queued)

    codes = asyncio.run(both())
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
    wait = small_wait(restore, small)
    assert wait < big_cost / 10, (wait, big_cost)
    assert "dropped before it started" in restore.log()


def test_a_rest_call_whose_client_hangs_up_stops_within_a_tile(restore, photos, big_cost):
    """The same abandoned big request over REST (binary tensor extension): the client closes
    its connection once the request is accepted; the work stops at the next tile."""
    big, small = photos
    body, headers = check.rest_binary("restore", [1, *big.shape], big.tobytes(), tile_size=TILE)
    host, port = restore.http.split(":")
    accepted, stopped = requests_accepted(restore), restore.log().count("stopping its work")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        conn.sendall(
            f"POST /v2/models/restore/infer HTTP/1.1\r\nHost: x\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        conn.sendall(body)
        until(lambda: requests_accepted(restore) == accepted + 1)  # it is at the model
    wait = small_wait(restore, small)
    print(f"REST hang-up: big request ~{big_cost:.1f} s, the next small one waited {wait:.2f} s")
    assert wait < big_cost / 10, (wait, big_cost)
    assert "the client hung up; cancelling its request" in restore.log()
    assert restore.log().count("stopping its work") == stopped + 1


def requests_seen(server) -> int:
    return server.log().count("grpc method: /inference.GRPCInferenceService/ModelInfer")


def requests_accepted(server) -> int:
    return server.log().count("restore: accepted;")


def until(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigterm_stops_taking_requests_finishes_what_fits_and_cancels_the_rest(
    restore, photos, big_cost
):
    big, small = photos
    assert big_cost > 2 * GRACE, "the big request must outlast the grace period"
    # Measured, not inferred from a tile's cost: under load that measure swings (1.7 s a tile
    # once, with both cores busy), while the small request still took a fraction of the grace.
    assert small_wait(restore, small) < GRACE / 2, "the small request fits in the grace"

    async def scenario():
        async with grpc.aio.insecure_channel(restore.grpc, options=CHANNEL) as channel:
            stub = GRPCInferenceServiceStub(channel)
            seen = requests_accepted(restore)
            running = stub.ModelInfer(infer_request(small))
            await asyncio.to_thread(until, lambda: requests_accepted(restore) == seen + 1)
            queued = stub.ModelInfer(infer_request(big, tile_size=TILE))
            # accepted, not only received: SIGTERM must find it running or queued
            await asyncio.to_thread(until, lambda: requests_accepted(restore) == seen + 2)
            os.kill(restore.process.pid, signal.SIGTERM)
            signalled = time.monotonic()
            reply = await asyncio.to_thread(
                httpx.get, f"http://{restore.http}/v2/models/restore/ready"
            )
            assert reply.status_code == 503 and "shutting down" in reply.json()["error"]
            with pytest.raises(grpc.RpcError) as refused:
                await stub.ModelInfer(infer_request(small))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert (await running).outputs[0].shape == [1, *small.shape]
            with pytest.raises(grpc.RpcError) as cancelled:
                await queued
            assert cancelled.value.code() == grpc.StatusCode.UNAVAILABLE
            return signalled

    signalled = asyncio.run(scenario())
    restore.process.wait(GRACE + CANCEL_SETTLE_SECONDS + 10)
    exited = time.monotonic() - signalled
    # the grace, then one tile of the big request at most (CANCEL_SETTLE_SECONDS at the most),
    # then KServe's own stop
    assert GRACE - 1 < exited < GRACE + CANCEL_SETTLE_SECONDS + 2, exited
    assert restore.process.returncode == 0
    assert "grace period over; cancelled 1 request(s)" in restore.log()
