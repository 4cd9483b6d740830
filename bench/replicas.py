"""Predictor replicas: throughput and p95 latency with 1, 2 and 3 replicas behind one or two
gateways, with a replica killed mid-run, and the balancing choice (gRPC's round_robin against
the gateway's least-busy pick, transformer/replicas.py).

    flock /tmp/bench.lock .venv/bin/python bench/replicas.py [--cost-ms 400] [--requests 36]
        [--clients 6] [--real --side 256] [--only scale,kill,balance]

Predictors (real processes on 127.0.0.1): by default tests/slow_predictor.py's tiled server,
the predictors' own gRPC server (predictors/v2grpc.py) whose model takes --cost-ms per call,
one call at a time (SLOW_ONE_AT_A_TIME=1), as one GPU would: the CPU does not decide the result.
--real: real restore predictors (generated NAFNet weights, CPU) on a --side px photo; then the
replicas share this machine's cores, and a machine with fewer cores than replicas cannot show
their gain (the report says how many cores there are).

  scale    1, 2, 3 replicas x 1, 2 gateways (each gateway given every replica's address, the
           predictors capped at MAX_INFLIGHT=1): --requests requests from --clients clients
           spread over the gateways; requests/s, p50 and p95 latency, statuses
  kill     2 replicas, 1 gateway: one replica killed once a third of the requests are
           answered; statuses (all 200 expected) and throughput
  balance  2 replicas, no gateway: the same mixed work (one call of 6x the cost, then three of
           1x, repeated) sent two at a time over one gRPC channel with round_robin, and with
           the least-busy pick over one channel per replica

Markdown on stdout, JSON in bench/results/replicas-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest  # noqa: E402

from tests import weights_factory  # noqa: E402
from tests.gateway_process import start_gateway  # noqa: E402
from tests.servers import start_predictor, stop_process  # noqa: E402
from tests.slow_predictor import start_tiled_slow_predictor  # noqa: E402
from transformer.config import Target  # noqa: E402
from transformer.predictors import to_parameter  # noqa: E402
from transformer.replicas import ReplicaSet  # noqa: E402
from transformer.v2wire import MODEL_INFER, RawTensorClient, encode_request  # noqa: E402

ONE_AT_A_TIME = {"SLOW_ONE_AT_A_TIME": "1"}
CAP = {"MAX_INFLIGHT": "1", **ONE_AT_A_TIME}  # and a busy answer past one


def photo_png(side: int) -> bytes:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side, 3), np.uint8)).save(out, "PNG")
    return out.getvalue()


class Replicas:
    """`n` predictor replicas of `restore` (slow or real), stopped on exit."""

    def __init__(self, n: int, args, tmp: Path, env: dict = CAP):
        self.processes, self.addresses = [], []
        for i in range(n):
            if args.real:
                model_dir = weights_factory.model_dir("restore", "denoise")
                p = start_predictor("restore", model_dir, tmp, extra_env={"MAX_INFLIGHT": "1"})
                p.wait()
                self.processes.append(p.process)
                self.addresses.append(p.grpc)
            else:
                process, address = start_tiled_slow_predictor(tmp / f"slow-{i}.log", 1, env=env)
                self.processes.append(process)
                self.addresses.append(address)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            stop_process(process)


async def drive(urls, requests, clients, body, params, on_answer=None):
    """`requests` POST /restore from `clients` at a time, round robin over `urls`; returns
    (seconds, latencies, status counts)."""
    latencies, statuses = [], Counter()
    todo = iter(range(requests))

    async def client(k: int, http: httpx.AsyncClient) -> None:
        for i in todo:
            start = time.monotonic()
            try:
                reply = await http.post(
                    f"{urls[(k + i) % len(urls)]}/restore",
                    params=params,
                    files={"file": ("p.png", body, "image/png")},
                )
                statuses[reply.status_code] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.monotonic() - start)
            if on_answer:
                on_answer(sum(statuses.values()))

    start = time.monotonic()
    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*(client(k, http) for k in range(clients)))
    return time.monotonic() - start, latencies, statuses


def summary(name, seconds, latencies, statuses, requests) -> dict:
    ordered = sorted(latencies)
    return {
        "scenario": name,
        "requests_per_s": round(requests / seconds, 2),
        "p50_s": round(statistics.median(ordered), 3),
        "p95_s": round(ordered[max(0, int(0.95 * len(ordered)) - 1)], 3),
        "statuses": dict(statuses),
    }


def scale(args, tmp, body, params) -> list[dict]:
    rows = []
    for n in (1, 2, 3):
        with Replicas(n, args, tmp) as replicas:
            for g in (1, 2):
                gateways = [
                    start_gateway({"restore": ",".join(replicas.addresses)}, tmp) for _ in range(g)
                ]
                try:
                    urls = [gw.url for gw in gateways]
                    asyncio.run(drive(urls, 2, 1, body, params))  # warm: channels, first call
                    result = asyncio.run(drive(urls, args.requests, args.clients, body, params))
                    rows.append(summary(f"{n} replica(s), {g} gateway(s)", *result, args.requests))
                finally:
                    for gw in gateways:
                        gw.stop()
                print(rows[-1], file=sys.stderr)
    return rows


def kill(args, tmp, body, params) -> list[dict]:
    with Replicas(2, args, tmp) as replicas:
        gateway = start_gateway({"restore": ",".join(replicas.addresses)}, tmp)
        try:
            victim = replicas.processes[0]

            def on_answer(answered: int) -> None:
                if answered >= args.requests // 3 and victim.poll() is None:
                    victim.kill()

            asyncio.run(drive([gateway.url], 2, 1, body, params))
            result = asyncio.run(
                drive([gateway.url], args.requests, args.clients, body, params, on_answer)
            )
            return [summary("2 replicas, one killed at 1/3", *result, args.requests)]
        finally:
            gateway.stop()


async def _balance_run(addresses, cost_ms: int, calls: int, least_busy: bool) -> dict:
    image = np.zeros((16, 16, 3), np.uint8)
    costs = [cost_ms * (6 if i % 4 == 0 else 1) for i in range(calls)]
    tensor = ModelInferRequest.InferInputTensor(
        name="image", datatype="UINT8", shape=[1, 16, 16, 3]
    )

    def request(cost: int) -> bytes:
        message = ModelInferRequest(
            model_name="restore", inputs=[tensor], parameters={"tile_size": to_parameter(cost)}
        )
        return encode_request(message, [image])

    todo = iter(costs)
    latencies: list[float] = []
    if least_busy:
        replicas = ReplicaSet(
            "restore",
            Target(addresses=tuple(addresses)),
            lambda a: RawTensorClient(a),
            lambda: None,
        )

        async def call(cost: int) -> None:
            replica = replicas.pick(set())
            replica.inflight += 1
            try:
                await replica.client.infer(request(cost), timeout=600)
            finally:
                replica.inflight -= 1
    else:
        channel = grpc.aio.insecure_channel(
            "ipv4:" + ",".join(addresses), options=[("grpc.lb_policy_name", "round_robin")]
        )
        infer = channel.unary_unary(MODEL_INFER)

        async def call(cost: int) -> None:
            await infer(request(cost), timeout=600)

    async def worker() -> None:
        for cost in todo:
            start = time.monotonic()
            await call(cost)
            latencies.append(time.monotonic() - start)

    await asyncio.gather(*(call(0) for _ in range(4)))  # connect every subchannel first
    start = time.monotonic()
    await asyncio.gather(worker(), worker())  # two at a time: one per replica, as the gateway
    seconds = time.monotonic() - start
    if least_busy:
        await replicas.close()
    else:
        await channel.close()
    ideal = sum(costs) / 1000 / len(addresses)
    ordered = sorted(latencies)
    return {
        "scenario": "balance: " + ("least-busy pick" if least_busy else "round_robin"),
        "seconds": round(seconds, 2),
        "ideal_s": round(ideal, 2),
        "p95_s": round(ordered[max(0, int(0.95 * len(ordered)) - 1)], 3),
    }


def balance(args, tmp) -> list[dict]:
    slow = argparse.Namespace(**{**vars(args), "real": False})
    with Replicas(2, slow, tmp, ONE_AT_A_TIME) as replicas:  # calls queue: no busy answers
        return [
            asyncio.run(_balance_run(replicas.addresses, args.cost_ms, 24, least_busy))
            for least_busy in (False, True)
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cost-ms", type=int, default=400, help="slow predictors' cost per call")
    parser.add_argument("--requests", type=int, default=36)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--real", action="store_true", help="real restore predictors (CPU)")
    parser.add_argument("--side", type=int, default=256, help="--real: the photo's side (px)")
    parser.add_argument("--only", default="scale,kill,balance")
    parser.add_argument("--plot", type=Path, help="a PNG of throughput against replicas here")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    body = photo_png(args.side if args.real else 32)
    params = {} if args.real else {"tile_size": args.cost_ms}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        only = args.only.split(",")
        if "scale" in only:
            rows += scale(args, tmp, body, params)
        if "kill" in only:
            rows += kill(args, tmp, body, params)
        if "balance" in only:
            rows += balance(args, tmp)
    kind = f"real restore predictors, {args.side} px" if args.real else f"{args.cost_ms} ms/call"
    print(
        f"\n{cores} CPU cores; predictors: {kind}; {args.requests} requests, {args.clients} clients"
    )
    if args.real and cores < 3:
        print(f"(only {cores} cores: real CPU replicas compete for them; use the slow ones)")
    print(
        "\n| scenario | req/s | p50 s | p95 s | statuses / seconds (ideal) |\n|---|---|---|---|---|"
    )
    for r in rows:
        if "seconds" in r:
            print(f"| {r['scenario']} | | | {r['p95_s']} | {r['seconds']} ({r['ideal_s']}) |")
        else:
            print(
                f"| {r['scenario']} | {r['requests_per_s']} | {r['p50_s']} | {r['p95_s']} "
                f"| {r['statuses']} |"
            )
    out = ROOT / "bench" / "results" / f"replicas-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cores": cores, "args": vars(args), "rows": rows}, default=str))
    if args.plot:
        plot(rows, args.plot, kind)


def plot(rows: list[dict], path: Path, kind: str) -> None:
    """Requests per second against replicas, one line per number of gateways, and the ideal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    best = 0.0
    for g in (1, 2):
        points = [
            (int(r["scenario"][0]), r["requests_per_s"])
            for r in rows
            if r["scenario"].endswith(f"{g} gateway(s)") and "requests_per_s" in r
        ]
        if points:
            replicas, rates = [n for n, _ in points], [rate for _, rate in points]
            ax.plot(replicas, rates, marker="o", label=f"{g} gateway{'s' if g > 1 else ''}")
            best = max(best, points[0][1])
    if best:
        ax.plot([1, 2, 3], [best, 2 * best, 3 * best], "k:", label="n x one replica")
    ax.set_xticks([1, 2, 3])
    ax.set_xlabel("predictor replicas")
    ax.set_ylabel("requests per second")
    ax.set_title(f"Throughput ({kind})", fontsize=10)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
