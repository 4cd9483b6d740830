"""Several predictor replicas per task (CONTRACT section 8): the gateway spreads calls over a
list of replicas or a dns:/// name, one call at a time per replica (MAX_INFLIGHT_PER_REPLICA),
and with two gateways each replica stays within its own cap (the predictors' MAX_INFLIGHT:
a busy replica answers at once and the gateway tries another).

The replicas are tests/slow_predictor.py's tiled server: the predictors' own gRPC server
(predictors/v2grpc.py, with its MAX_INFLIGHT cap) whose model takes `tile_size` ms per call and
prints `start ID` / `done ID`, so a call's cost is fixed whatever the machine's load (the CPU
does not decide the result) and each replica's log tells how many calls it ran at once. The
cost is sized from a measured request through the gateway, so the ratios hold on any machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import time

import grpc
import httpx
import numpy as np
import pytest
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest
from PIL import Image

from common.limits import BUSY_DETAIL
from tests.gateway_process import start_gateway
from tests.servers import free_port, stop_process
from tests.slow_predictor import start_tiled_slow_predictor
from transformer import replicas as replicas_module
from transformer.config import Settings, Target, parse_target
from transformer.predictors import to_parameter
from transformer.v2wire import RawTensorClient, encode_request

CAP = {"MAX_INFLIGHT": "1"}  # each replica runs one call at a time, whoever sends it


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    """Three slow replicas, each capped at one call: (process, address, log path)."""
    tmp = tmp_path_factory.mktemp("replicas")
    started = []
    try:
        for i in range(3):
            log = tmp / f"slow-{i}.log"
            process, address = start_tiled_slow_predictor(log, tiles=1, env=CAP)
            started.append((process, address, log))
        yield started
    finally:
        for process, _, _ in started:
            stop_process(process)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("gateways")


def png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(out, "PNG")
    return out.getvalue()


def gateway_for(addresses: str, tmp, **env):
    return start_gateway({"restore": addresses}, tmp, env={k: str(v) for k, v in env.items()})


async def _many(urls: list[str], cost_ms: int) -> list[httpx.Response]:
    body = png()
    async with httpx.AsyncClient(timeout=300) as client:
        calls = [
            client.post(
                f"{url}/restore",
                params={"tile_size": cost_ms},
                files={"file": ("p.png", body, "image/png")},
            )
            for url in urls
        ]
        return await asyncio.gather(*calls)


def concurrently(urls: list[str], cost_ms: int) -> tuple[float, list[httpx.Response]]:
    """Every url in `urls` POSTed /restore at once; (seconds until the last answer, answers)."""
    start = time.monotonic()
    replies = asyncio.run(_many(urls, cost_ms))
    return time.monotonic() - start, replies


def log_lines(log) -> list[str]:
    return log.read_text().splitlines()


def most_at_once(lines: list[str]) -> int:
    """The most calls a replica ran at once, from its start/done/cancelled lines."""
    running = most = 0
    for line in lines:
        if line.startswith("start "):
            running += 1
            most = max(most, running)
        elif line.startswith(("done ", "cancelled ")):
            running -= 1
    return most


def started(lines: list[str]) -> int:
    return sum(line.startswith("start ") for line in lines)


def cost_ms_for(url: str, times: float) -> int:
    """A call cost `times` the gateway's own time for one request (the median of three, with
    no predictor time), at least 300 ms: the ratios below then hold on any machine."""
    overheads = sorted(concurrently([url], 0)[0] for _ in range(3))
    return int(min(5000, max(300, times * overheads[1] * 1000)))


def test_three_replicas_finish_nine_requests_at_least_2_5_times_faster_than_one(replicas, tmp):
    addresses = [address for _, address, _ in replicas]
    one = gateway_for(addresses[0], tmp)
    three = gateway_for(",".join(addresses), tmp)
    try:
        # nine requests: one replica 9 x (cost + overhead), three 3 x cost + 9 x overhead at
        # worst (the gateway's own work on a busy CPU); cost >= 25 x overhead keeps >= 2.5
        cost = cost_ms_for(three.url, 25)
        before = [started(log_lines(log)) for _, _, log in replicas]
        t_one, one_replies = concurrently([one.url] * 9, cost)
        t_three, three_replies = concurrently([three.url] * 9, cost)
        assert [r.status_code for r in one_replies + three_replies] == [200] * 18
        after = [started(log_lines(log)) for _, _, log in replicas]
        print(f"cost {cost} ms: one replica {t_one:.2f} s, three {t_three:.2f} s")
        assert t_one >= 2.5 * t_three, (t_one, t_three)
        served = [a - b for a, b in zip(after, before, strict=True)]
        assert served[0] >= 9 and all(n >= 1 for n in served[1:]), served
        for _, _, log in replicas:
            assert most_at_once(log_lines(log)) == 1
        metrics = httpx.get(f"{three.url}/metrics", timeout=10).text
        assert re.search(r'photo_enhance_replicas_up\{task="restore"\} 3\.0', metrics)
        assert re.search(r'photo_enhance_queue_depth\{task="restore"\} 0\.0', metrics)
        assert re.search(r'photo_enhance_inflight\{task="restore"\} 0\.0', metrics)
    finally:
        one.stop()
        three.stop()


def test_two_gateways_keep_each_replica_within_its_cap(replicas, tmp):
    """Each gateway admits two calls (two replicas, one each): four at once for two slots.
    The replicas refuse the extra ones as busy; the gateways try again; all are answered."""
    (_, a, log_a), (_, b, log_b) = replicas[0], replicas[1]
    gateways = [gateway_for(f"{a},{b}", tmp) for _ in range(2)]
    try:
        cost = cost_ms_for(gateways[0].url, 5)
        marks = [len(log_lines(log_a)), len(log_lines(log_b))]
        urls = [g.url for g in gateways] * 4
        elapsed, replies = concurrently(urls, cost)
        assert [r.status_code for r in replies] == [200] * 8, [r.text for r in replies]
        lines = [log_lines(log_a)[marks[0] :], log_lines(log_b)[marks[1] :]]
        assert [most_at_once(part) for part in lines] == [1, 1]
        assert sum(started(part) for part in lines) == 8  # refused calls never started
        assert elapsed >= 4 * cost / 1000  # two slots for eight calls
    finally:
        for gateway in gateways:
            gateway.stop()


def test_a_dns_name_is_resolved_to_its_replicas(replicas, tmp):
    """dns:///localhost:PORT: the name's address (127.0.0.1 here) is the replica."""
    _, address, log = replicas[2]
    port = address.rpartition(":")[2]
    gateway = gateway_for(f"dns:///localhost:{port}", tmp)
    try:
        before = started(log_lines(log))
        _, replies = concurrently([gateway.url] * 2, 0)
        assert [r.status_code for r in replies] == [200, 200]
        assert started(log_lines(log)) == before + 2
        health = httpx.get(f"{gateway.url}/health", timeout=10).json()["models"]["restore"]
        assert health["ready"] is True and health["replicas"]["up"] >= 1, health
    finally:
        gateway.stop()


def test_a_name_that_does_not_resolve_is_503_with_retry_after(tmp):
    gateway = gateway_for("dns:///no-such-predictor.invalid:8081", tmp)
    try:
        _, (reply,) = concurrently([gateway.url], 0)
        assert reply.status_code == 503, reply.text
        assert "Retry-After" in reply.headers
        assert "does not resolve" in reply.json()["detail"]
        assert "no-such-predictor.invalid" not in reply.json()["detail"]  # the log names it
        assert "no-such-predictor.invalid" in gateway.log()
    finally:
        gateway.stop()


def test_a_replica_still_starting_is_not_a_failure_but_one_that_stops_is(tmp):
    """make run starts the gateway beside predictors that are still loading: their first
    /health is "not ready yet" (INFO), no warning; once one has been up, losing it is."""

    http_port, grpc_port = free_port(), free_port()
    gateway = gateway_for(f"127.0.0.1:{grpc_port}", tmp)
    process = None
    try:
        health = httpx.get(f"{gateway.url}/health", timeout=30).json()["models"]["restore"]
        assert health["state"] == "starting"
        not_ready = [line for line in log_lines(gateway.log_path) if "not ready yet" in line]
        assert not_ready and " INFO " in not_ready[0], gateway.log()
        assert " WARNING " not in gateway.log()

        log = tmp / "starting-late.log"
        process, _ = start_tiled_slow_predictor(log, tiles=1, ports=(http_port, grpc_port))
        deadline = time.monotonic() + 30
        while not httpx.get(f"{gateway.url}/health", timeout=30).json()["models"]["restore"][
            "ready"
        ]:
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.2)
        assert " WARNING " not in gateway.log()

        stop_process(process)
        process = None
        health = httpx.get(f"{gateway.url}/health", timeout=30).json()["models"]["restore"]
        assert health["state"] == "unavailable"
        failed = [line for line in log_lines(gateway.log_path) if " failed (" in line]
        assert failed and " WARNING " in failed[0], gateway.log()
    finally:
        if process is not None:
            stop_process(process)
        gateway.stop()


@pytest.mark.parametrize(
    ("raw", "target"),
    [
        ("h:1", Target(addresses=("h:1",))),
        ("10.0.0.1:81, 10.0.0.2:81", Target(addresses=("10.0.0.1:81", "10.0.0.2:81"))),
        ("[::1]:81", Target(addresses=("[::1]:81",))),
        ("dns:///p.ns.svc.cluster.local:8081", Target(dns="p.ns.svc.cluster.local:8081")),
    ],
)
def test_predictor_addresses_are_one_a_list_or_a_dns_name(raw, target):
    assert parse_target(raw) == target


@pytest.mark.parametrize(
    "raw", ["h", "h:0", "h:x", "h:1,", "h:1,h:1", "dns://h:1", "http://h:1", "dns:///h"]
)
def test_a_bad_predictor_address_stops_the_gateway_with_its_name(raw):
    with pytest.raises(ValueError, match="PREDICTOR_RESTORE"):
        Settings.from_env({"PREDICTOR_RESTORE": raw})


def test_max_inflight_per_task_caps_the_replicas_total():
    from transformer.predictors import Predictors

    env = {"PREDICTOR_RESTORE": "h:1,h:2,h:3", "MAX_INFLIGHT_PER_REPLICA": "2"}
    assert Predictors(Settings.from_env(env))._concurrency(3) == 6
    capped = Predictors(Settings.from_env({**env, "MAX_INFLIGHT_PER_TASK": "4"}))
    assert capped._concurrency(3) == 4
    assert capped._concurrency(0) == 2  # none up: one replica's worth finds out at once


def test_a_replica_at_its_cap_answers_busy_at_once_on_both_rpcs(replicas):
    """MAX_INFLIGHT=1: while one call runs, ModelInfer and ModelStreamInfer are refused with
    RESOURCE_EXHAUSTED "busy: ..." at once (not after the running call), to any OIP client."""
    _, address, log = replicas[0]

    def request(cost_ms: int) -> bytes:
        tensor = ModelInferRequest.InferInputTensor(
            name="image", datatype="UINT8", shape=[1, 8, 8, 3]
        )
        message = ModelInferRequest(
            model_name="restore", inputs=[tensor], parameters={"tile_size": to_parameter(cost_ms)}
        )
        return encode_request(message, [np.zeros((8, 8, 3), np.uint8)])

    async def scenario() -> None:
        client = RawTensorClient(address, retries=0)
        try:
            before = started(log_lines(log))
            running = asyncio.create_task(client.infer(request(60_000), timeout=120))
            while started(log_lines(log)) == before:  # until it runs on the replica
                await asyncio.sleep(0.05)
            for call in (
                client.infer(request(0), timeout=30),
                client.stream_infer(request(0), lambda _: None, timeout=30),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    await call
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert refused.value.details().startswith(BUSY_DETAIL)
                assert not running.done()
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        finally:
            await client.close()

    asyncio.run(scenario())
    assert "Traceback" not in log.read_text()


def test_a_dns_name_is_resolved_again_as_pods_come_and_go(monkeypatch):
    """The bookkeeping of re-resolution (a name's pods cannot be changed on one machine):
    new addresses join, gone ones leave (closed once their calls end), a failed lookup keeps
    the replicas known. No connection is made: the clients here are stand-ins."""
    answers: list = [
        {"192.0.2.1"},
        {"192.0.2.1", "192.0.2.2"},
        OSError("Name or service not known"),
        {"192.0.2.2"},
        set(),
    ]

    async def lookup(host: str, port: int) -> set[str]:
        assert (host, port) == ("pods.test", 8081)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(replicas_module, "lookup", lookup)
    closed: list[str] = []

    class Client:
        def __init__(self, address: str):
            self.address = address

        async def close(self) -> None:
            closed.append(self.address)

    async def scenario() -> None:
        ups: list[int] = []
        pool = replicas_module.ReplicaSet(
            "restore", Target(dns="pods.test:8081"), Client, lambda: ups.append(pool.up)
        )
        await pool._resolve()
        assert set(pool.replicas) == {"192.0.2.1:8081"}
        await pool._resolve()
        assert set(pool.replicas) == {"192.0.2.1:8081", "192.0.2.2:8081"}
        busy = pool.replicas["192.0.2.1:8081"]
        busy.inflight = 1  # a call at it when it leaves
        await pool._resolve()  # the lookup fails: nothing changes
        assert set(pool.replicas) == {"192.0.2.1:8081", "192.0.2.2:8081"}
        await pool._resolve()
        assert set(pool.replicas) == {"192.0.2.2:8081"}
        await asyncio.sleep(0)
        assert closed == []  # its call goes on
        busy.inflight = 0
        pool.done(busy)
        await asyncio.sleep(0)
        assert closed == ["192.0.2.1:8081"]
        assert ups == [1, 2, 1]  # admission heard of each change
        await pool._resolve()  # no address at all (no pod ready)
        assert pool.up == 0 and pool.pick(set()) is None

    asyncio.run(scenario())
