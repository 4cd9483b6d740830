"""The gateway under load: bursts, a short soak, an abandoned request and a tiny tile.

    flock /tmp/bench.lock .venv/bin/python bench/load.py [--code DIR] [--label NAME]

Starts the restore and upscale predictors (generated test weights, CPU) and the gateway, all from
the source tree --code (default: this one; point it at another checkout to measure "before"), on
127.0.0.1 only. Every loop is bounded (request counts, seconds). Scenarios:

  burst      --burst N requests at once (/upscale x2 of a --side px photo); twice, back to back
  soak       --soak-clients clients for --soak-seconds, each sending one request after another
             (restore, upscale in turn); a 429 makes that client wait min(Retry-After, 1) s
  abandoned  a large /restore (--abandon-side px, whole image) whose client gives up after
             --give-up-s, then at once a small /restore: its latency shows whether the
             abandoned work was stopped (compared with the same small request on an idle server)
  tiny-tile  /restore?tile_size=8 of a 128 px photo, the client giving up after --tiny-timeout-s
  uploads    --uploads N concurrent multipart uploads of --upload-mb MB each to /upscale (a
             --side px PNG padded with random bytes: the upload is large, the work small); its
             end RSS is sampled --settle-s after the last answer (memory handed back), and
             p50_429_s says how soon the refused ones were answered

Issue 19's figure, "40 concurrent 31 MB uploads: gateway peak RSS":
    flock /tmp/bench.lock .venv/bin/python bench/load.py --only uploads --label after
    flock /tmp/bench.lock .venv/bin/python bench/load.py --only uploads --label before \
        --code /path/to/a/checkout/of/the/commit/before

For each: status counts, latency percentiles (p50/p95/max, seconds), and the peak RSS (MiB) of the
gateway and of each predictor, sampled every 0.2 s. Also the CPU seconds each process used, as
other work on the machine slows wall time. Results: Markdown on stdout and
bench/results/load-<label>-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import weights_factory  # noqa: E402
from tests.servers import GRPC_MAX, free_port  # noqa: E402

TASKS = {"restore": "denoise", "upscale": "x4plus"}
FLAGS = {"restore": "--predictor_restore", "upscale": "--predictor_upscale"}


def photo_png(side: int) -> bytes:
    im = Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


class Servers:
    """The predictors and the gateway, run from `code` as real processes on 127.0.0.1."""

    def __init__(self, code: Path, tmp: Path):
        self.code = code
        self.tmp = tmp
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PREDICTOR_", "MAX_"))},
            "PYTHONPATH": str(code),
            "FORCE_CPU": "true",
            "ALLOW_UNVERIFIED_WEIGHTS": "true",
            "PYTHONWARNINGS": "ignore",
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, cmd: list[str]) -> None:
        log = (self.tmp / f"{name}.log").open("w")
        self.processes[name] = subprocess.Popen(
            [sys.executable, *cmd], cwd=self.code, env=self.env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def start(self) -> str:
        addresses = {}
        for task, variant in TASKS.items():
            grpc_port, http_port = free_port(), free_port()
            self.spawn(task, [
                "-m", "predictors", task, "--variant", variant,
                "--model_dir", str(weights_factory.model_dir(task, variant)),
                "--http_port", str(http_port), "--grpc_port", str(grpc_port),
                "--grpc_max_send_message_length", GRPC_MAX,
                "--grpc_max_receive_message_length", GRPC_MAX,
            ])  # fmt: skip
            addresses[task] = f"127.0.0.1:{grpc_port}"
        port = free_port()
        cmd = ["-m", "transformer", "--http_host", "127.0.0.1", "--http_port", str(port)]
        for task, address in addresses.items():
            cmd += [FLAGS[task], address]
        self.spawn("gateway", cmd)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            dead = [n for n, p in self.processes.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} exited:\n{(self.tmp / f'{dead[0]}.log').read_text()}")
            try:
                models = httpx.get(f"{url}/health", timeout=5).json()["models"]
                if all(models[task]["ready"] for task in TASKS):
                    return url
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise TimeoutError("the servers did not become ready in 300 s")

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def cpu_seconds(self) -> dict[str, float]:
        out = {}
        for name, process in self.processes.items():
            try:
                times = psutil.Process(process.pid).cpu_times()
                out[name] = times.user + times.system
            except psutil.Error:
                out[name] = float("nan")
        return out


class PeakRss:
    """Samples the processes' RSS every 0.2 s while in a `with` block; keeps the peaks (MiB)."""

    def __init__(self, processes: dict[str, subprocess.Popen]):
        self.handles = {name: psutil.Process(p.pid) for name, p in processes.items()}
        self.peak: dict[str, float] = {}
        self.start: dict[str, float] = {}
        self._stop = threading.Event()

    def _sample(self) -> dict[str, float]:
        rss = {}
        for name, handle in self.handles.items():
            try:
                rss[name] = handle.memory_info().rss / 2**20
            except psutil.Error:
                rss[name] = 0.0
        return rss

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, value in self._sample().items():
                self.peak[name] = max(self.peak.get(name, 0.0), value)

    def __enter__(self) -> PeakRss:
        self.start = self._sample()
        self.peak = dict(self.start)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.end = self._sample()


def summary(statuses: list, latencies: list[float]) -> dict:
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "requests": len(statuses),
        "statuses": dict(Counter(str(s) for s in statuses)),
        "p50_s": pct(0.5) if ordered else None,
        "p95_s": pct(0.95) if ordered else None,
        "max_s": round(ordered[-1], 3) if ordered else None,
    }


async def timed_post(client: httpx.AsyncClient, route: str, body: bytes, params: dict):
    start = time.perf_counter()
    try:
        reply = await client.post(
            route, params=params, files={"file": ("photo.png", body, "image/png")}
        )
        status, retry_after = reply.status_code, reply.headers.get("retry-after")
    except httpx.TimeoutException:
        status, retry_after = "client-timeout", None
    except httpx.HTTPError as exc:
        status, retry_after = type(exc).__name__, None
    return status, time.perf_counter() - start, retry_after


async def burst(url: str, n: int, body: bytes) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits()) as client:
        results = await asyncio.gather(
            *(timed_post(client, "/upscale", body, {"scale": 2, "tile_size": 0}) for _ in range(n))
        )
    return summary([r[0] for r in results], [r[1] for r in results])


async def soak(url: str, clients: int, seconds: float, body: bytes) -> dict:
    statuses, latencies = [], []
    stop_at = time.monotonic() + seconds
    routes = [("/restore", {"tile_size": 0}), ("/upscale", {"scale": 2, "tile_size": 0})]

    async def one_client(i: int, client: httpx.AsyncClient) -> None:
        k = i
        while time.monotonic() < stop_at:
            route, params = routes[k % 2]
            k += 1
            status, took, retry_after = await timed_post(client, route, body, params)
            statuses.append(status)
            latencies.append(took)
            if status == 429:
                await asyncio.sleep(min(float(retry_after or 1), 1.0))

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await asyncio.gather(*(one_client(i, client) for i in range(clients)))
    return summary(statuses, latencies)


async def abandoned(url: str, big: bytes, small: bytes, give_up_s: float) -> dict:
    params = {"tile_size": 0}
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        _, idle_small, _ = await timed_post(client, "/restore", small, params)
        _, big_alone, _ = await timed_post(client, "/restore", big, params)
    async with httpx.AsyncClient(base_url=url, timeout=give_up_s) as quitter:
        gave_up, _, _ = await timed_post(quitter, "/restore", big, params)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        status, after, _ = await timed_post(client, "/restore", small, params)
    return {
        "big_request_alone_s": round(big_alone, 3),
        "abandoned_after_s": give_up_s,
        "abandoned_outcome": str(gave_up),
        "next_small_status": status,
        "next_small_s": round(after, 3),
        "small_on_idle_server_s": round(idle_small, 3),
    }


def padded_png(side: int, total_mb: float) -> bytes:
    """A side px PNG followed by random bytes up to total_mb (decoders ignore what follows the
    image's end): an upload as large as a camera's, whose image costs the predictor little."""
    image = photo_png(side)
    padding = int(total_mb * 2**20) - len(image)
    return image + os.urandom(max(0, padding))


async def uploads(url: str, n: int, body: bytes, settle_s: float) -> dict:
    """n concurrent multipart uploads of `body` to /upscale; the RSS sampled `settle_s` after
    the last answer shows what the gateway handed back."""
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits()) as client:
        results = await asyncio.gather(
            *(timed_post(client, "/upscale", body, {"scale": 2, "tile_size": 0}) for _ in range(n))
        )
    await asyncio.sleep(settle_s)
    outcome = summary([r[0] for r in results], [r[1] for r in results])
    refused = sorted(r[1] for r in results if r[0] == 429)
    outcome["p50_429_s"] = round(refused[len(refused) // 2], 3) if refused else None
    outcome["upload_mb"] = round(len(body) / 2**20, 1)
    return outcome


async def tiny_tile(url: str, body: bytes, timeout_s: float) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as client:
        status, took, _ = await timed_post(client, "/restore", body, {"tile_size": 8})
    return {"status": str(status), "seconds": round(took, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="source tree to run")
    parser.add_argument("--label", default="", help="name in the results file (e.g. before)")
    parser.add_argument("--side", type=int, default=64, help="photo side for burst and soak")
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--soak-clients", type=int, default=4)
    parser.add_argument("--soak-seconds", type=float, default=30)
    parser.add_argument("--abandon-side", type=int, default=768)
    parser.add_argument("--give-up-s", type=float, default=0.5)
    parser.add_argument("--tiny-timeout-s", type=float, default=20)
    parser.add_argument("--uploads", type=int, default=40, help="concurrent large uploads")
    parser.add_argument("--upload-mb", type=float, default=31, help="size of each upload")
    parser.add_argument("--settle-s", type=float, default=2, help="uploads: RSS this long after")
    parser.add_argument(
        "--only", nargs="*", help="run only these scenarios (burst, soak, abandoned, ...)"
    )
    args = parser.parse_args()
    code = args.code.resolve()
    results: dict = {"code": str(code), "label": args.label, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        servers = Servers(code, Path(tmp))
        try:
            url = servers.start()
            small = photo_png(args.side)
            for name, run in [
                ("burst 1", lambda: burst(url, args.burst, small)),
                ("burst 2", lambda: burst(url, args.burst, small)),
                ("soak", lambda: soak(url, args.soak_clients, args.soak_seconds, small)),
                ("abandoned", lambda: abandoned(
                    url, photo_png(args.abandon_side), small, args.give_up_s)),
                ("tiny-tile", lambda: tiny_tile(url, photo_png(128), args.tiny_timeout_s)),
                ("uploads", lambda: uploads(
                    url, args.uploads, padded_png(args.side, args.upload_mb), args.settle_s)),
            ]:  # fmt: skip
                if args.only and name.split()[0] not in args.only:
                    continue
                cpu_before = servers.cpu_seconds()
                start = time.perf_counter()
                with PeakRss(servers.processes) as rss:
                    outcome = asyncio.run(run())
                cpu_after = servers.cpu_seconds()
                outcome["wall_s"] = round(time.perf_counter() - start, 2)
                outcome["cpu_s"] = {
                    n: round(cpu_after[n] - cpu_before[n], 2) for n in servers.processes
                }
                outcome["peak_rss_mib"] = {n: round(v) for n, v in rss.peak.items()}
                outcome["end_rss_mib"] = {n: round(v) for n, v in rss.end.items()}
                results[name] = outcome
                print(f"{name}: {json.dumps(outcome)}", flush=True)
        finally:
            servers.stop()
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    label = f"-{args.label}" if args.label else ""
    path = out_dir / f"load{label}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
