"""Jobs (CONTRACT section 6): what a job costs next to the synchronous route, how many go through
two gateway replicas on Redis, the gateway's memory with a full queue, and how long a killed
replica's job waits to be taken over.

    .venv/bin/python bench/jobs.py [--repeat 20] [--jobs 200] [--queued 1000] [--lease-s 10]
    .venv/bin/python bench/jobs.py --quick      # a smoke run (well under a minute), no figures

Real processes on 127.0.0.1: tests/slow_predictor.py as the predictor (a KServe server whose
every call takes --call-ms; a fixed time, so what differs between the two paths is the gateway's
own work), gateway processes (`python -m transformer`) and Debian's redis-server. The photo is
the astronaut at --side px (PNG). Measured:
  1. added latency: a job (POST with Prefer: respond-async, its events until `done`, GET result)
     against the synchronous POST, one at a time, medians of --repeat; on the embedded store
     (SQLite) and on Redis;
  2. throughput: --jobs jobs submitted at once (16 clients), alternating between two replicas
     sharing Redis and a results directory; jobs/s from the first submission to the last end;
  3. memory: the gateway's RSS (psutil) idle, then with --queued jobs queued behind one running
     job (JOBS_CONCURRENCY=1);
  4. takeover: kill -9 of the replica running a job; seconds until the other replica runs it
     (JOB_LEASE_S=--lease-s, the default lease unless given) and until it has succeeded.
Results: a Markdown table on stdout and bench/results/jobs-<time>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import psutil
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.gateway_process import start_gateway  # noqa: E402
from tests.jobs_client import accepted, events, files_of, submit, wait_for  # noqa: E402
from tests.redis_server import start_redis  # noqa: E402
from tests.slow_predictor import start_slow_predictor  # noqa: E402

LONG_MS = 600_000  # the call that holds the one slot while the queue fills
KEY = "photo-enhance:{jobs}:job:"


def photo(side: int) -> bytes:
    image = Image.fromarray(data.astronaut()).resize((side, side), Image.LANCZOS)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def latency(client: httpx.Client, body: bytes, call_ms: int, repeat: int) -> dict:
    params = {"scale": 1, "tile_size": call_ms}

    def sync() -> None:
        client.post("/upscale", params=params, files=files_of(body)).raise_for_status()

    def job() -> None:
        made = accepted(submit(client, "/upscale", body, **params))
        *_, last = events(client, made)
        assert last.job["status"] == "succeeded", last.job
        client.get(made["urls"]["result"]).raise_for_status()

    sync(), job()  # warm-up: connections, first calls
    sync_s, job_s = [], []
    for _ in range(repeat):
        sync_s.append(seconds(sync))
        job_s.append(seconds(job))
    return {
        "sync_s": statistics.median(sync_s),
        "job_s": statistics.median(job_s),
        "added_s": statistics.median(job_s) - statistics.median(sync_s),
        "runs": repeat,
    }


def throughput(urls: list[str], body: bytes, call_ms: int, count: int) -> dict:
    clients = [httpx.Client(base_url=url, timeout=600) for url in urls]
    params = {"scale": 1, "tile_size": call_ms}
    try:
        start, wall = time.perf_counter(), time.time()
        with ThreadPoolExecutor(16) as pool:
            jobs = list(
                pool.map(
                    lambda i: accepted(
                        submit(clients[i % len(clients)], "/upscale", body, **params)
                    ),
                    range(count),
                )
            )
        submitted = time.perf_counter() - start
        ends = [wait_for(clients[0], job, ("succeeded", "failed"), within_s=3600) for job in jobs]
        # From the first submission to the last job's end (its finished_at, not when we looked).
        took = max(finished(job) for job in ends) - wall
    finally:
        for client in clients:
            client.close()
    failed = sum(job["status"] != "succeeded" for job in ends)
    return {
        "jobs": count,
        "replicas": len(urls),
        "submit_s": submitted,
        "total_s": took,
        "jobs_per_s": count / took,
        "failed": failed,
    }


def finished(job: dict) -> float:
    return datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00")).timestamp()


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def memory(gateway, body: bytes, queued: int) -> dict:
    with httpx.Client(base_url=gateway.url, timeout=120) as client:
        idle = rss_mb(gateway.process.pid)
        holder = accepted(submit(client, "/upscale", body, scale=1, tile_size=LONG_MS))
        wait_for(client, holder, "running")
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda _: accepted(submit(client, "/upscale", body, scale=1, tile_size=128)),
                    range(queued),
                )
            )
        time.sleep(2)  # let the allocator settle
        full = rss_mb(gateway.process.pid)
        client.post(f"{holder['urls']['self']}/cancel")
    return {
        "queued": queued,
        "upload_bytes": len(body),
        "rss_idle_mb": idle,
        "rss_queued_mb": full,
        "per_job_kb": (full - idle) * 1024 / queued,
    }


def takeover(replicas, redis, body: bytes, call_ms: int) -> dict:
    a, b = replicas
    with httpx.Client(base_url=a.url, timeout=60) as client:
        job = accepted(submit(client, "/upscale", body, scale=1, tile_size=call_ms))
        wait_for(client, job, "running")
    running = [g for g in replicas if f"job {job['id']}: running here" in g.log()]
    (victim,) = running
    survivor = b if victim is a else a
    victim.process.kill()  # SIGKILL: no clean-up; its lease lapses
    killed = time.perf_counter()
    victim.process.wait()
    while redis.hget(KEY + job["id"], "attempts") != "2":
        time.sleep(0.01)
    taken = time.perf_counter() - killed
    with httpx.Client(base_url=survivor.url, timeout=60) as client:
        done = wait_for(client, job, ("succeeded", "failed"), within_s=600)
    return {
        "taken_over_s": taken,
        "succeeded_s": time.perf_counter() - killed,
        "status": done["status"],
        "call_s": call_ms / 1000,
    }


def table(result: dict) -> str:
    s = result["settings"]
    lines = [
        f"CPU: {os.cpu_count()} cores; photo {s['side']} px PNG; predictor call {s['call_ms']} ms",
        "| measure | figure |",
        "|---|---|",
    ]
    for store, row in result["latency"].items():
        lines.append(
            f"| added latency of a job, {store} | {row['added_s'] * 1000:.0f} ms "
            f"(sync {row['sync_s'] * 1000:.0f} ms, job {row['job_s'] * 1000:.0f} ms) |"
        )
    t = result["throughput"]
    lines.append(
        f"| {t['jobs']} jobs through {t['replicas']} replicas on Redis | {t['jobs_per_s']:.1f} "
        f"jobs/s ({t['total_s']:.1f} s, {t['failed']} failed) |"
    )
    m = result["memory"]
    lines.append(
        f"| gateway RSS, idle -> {m['queued']} queued | {m['rss_idle_mb']:.0f} MiB -> "
        f"{m['rss_queued_mb']:.0f} MiB ({m['per_job_kb']:.1f} KiB a job) |"
    )
    k = result["takeover"]
    lines.append(
        f"| kill -9 -> taken over (JOB_LEASE_S={s['lease_s']:g}) | {k['taken_over_s']:.1f} s "
        f"(succeeded after {k['succeeded_s']:.1f} s) |"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=64, help="the photo's side in px")
    parser.add_argument("--call-ms", type=int, default=128, help="each predictor call (>= 128)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--queued", type=int, default=1000)
    parser.add_argument("--lease-s", type=float, default=10.0, help="JOB_LEASE_S (default 10)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny counts")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.jobs, args.queued, args.lease_s = 2, 10, 20, 1.5

    tmp = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    body = photo(args.side)
    predictor, address = start_slow_predictor(tmp / "slow.log")
    redis_server = start_redis(tmp)
    redis_url = redis_server.url.rsplit("/", 1)[0]
    gateways = []

    def gateway(**env):
        made = start_gateway({"upscale": address}, tmp, env={"MAX_JOBS_QUEUED": "100000", **env})
        gateways.append(made)
        return made

    result: dict = {"settings": dict(vars(args)), "latency": {}}
    try:
        for store, env in (("sqlite", {}), ("redis", {"JOBS_STORE": f"{redis_url}/1"})):
            one = gateway(**env)
            with httpx.Client(base_url=one.url, timeout=600) as client:
                result["latency"][store] = latency(client, body, args.call_ms, args.repeat)
            one.stop()
            print(json.dumps({"latency": {store: result["latency"][store]}}), file=sys.stderr)

        shared = {
            "JOBS_STORE": f"{redis_url}/2",
            "RESULTS_STORE": f"file://{tmp / 'shared'}",
            "JOB_LEASE_S": str(args.lease_s),
        }
        replicas = [gateway(**shared), gateway(**shared)]
        result["throughput"] = throughput([r.url for r in replicas], body, args.call_ms, args.jobs)
        print(json.dumps({"throughput": result["throughput"]}), file=sys.stderr)
        takeover_ms = max(2000, int(args.lease_s * 1000))  # still running when it is killed
        result["takeover"] = takeover(replicas, redis_server.client(db=2), body, takeover_ms)
        print(json.dumps({"takeover": result["takeover"]}), file=sys.stderr)
        for r in replicas:
            r.stop()

        alone = gateway(JOBS_CONCURRENCY="1")
        result["memory"] = memory(alone, body, args.queued)
        print(json.dumps({"memory": result["memory"]}), file=sys.stderr)
    finally:
        for g in gateways:
            g.stop()
        predictor.kill()
        predictor.wait()
        redis_server.stop()

    print(table(result))
    if args.quick:
        print("\n(--quick: a smoke run; no figures)")
        return 0
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"jobs-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\n{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
