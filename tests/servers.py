"""Start the project's servers as real processes on 127.0.0.1 for the tests."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
GRPC_MAX = str(256 << 20)


_HANDED_OUT: set[int] = set()


def _ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port() -> int:
    """A port nothing uses now, for a server that binds it once started (seconds later).

    Never one the kernel hands out by itself: outgoing connections (every test's clients)
    take their local ports from the ephemeral range, and one of them on the chosen port makes
    the server's bind fail (seen under load). Never the same port twice in one run either."""
    ephemeral = _ephemeral_ports()
    ours = range(10000, ephemeral.start) if ephemeral.start > 12000 else range(1024, 10000)
    for _ in range(1000):
        port = random.choice(ours)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in {ours.start}-{ours.stop - 1}")


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_script_server(
    script: str,
    args: list[str],
    log_path: Path,
    ports: tuple[int, int] | None = None,
    env: dict | None = None,
) -> tuple[subprocess.Popen, str]:
    """`python -c script *args HTTP_PORT GRPC_PORT`, a V2 server, once ready; returns the
    process and its gRPC address. On free ports, or on `ports` (http, grpc); `env` is added
    to this process's environment."""
    http_port, grpc_port = ports or (free_port(), free_port())
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", script, *args, str(http_port), str(grpc_port)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2).is_success:
                return process, f"127.0.0.1:{grpc_port}"
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(log_path.read_text())


@dataclass
class ServerProcess:
    """A KServe model server run as a process: health over its HTTP port, its log, stopping."""

    name: str
    http_port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _answers(self, path: str) -> bool:
        try:
            return httpx.get(f"http://{self.http}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def is_ready(self) -> bool:
        return self._answers("/v2/health/ready")

    def is_live(self) -> bool:
        return self._answers("/v2/health/live")

    def wait(self, ready: bool = True, timeout: float = 180) -> None:
        """Until ready (or, with ready=False, until live); fails with the server's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
            if self.is_ready() if ready else self.is_live():
                return
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not {'ready' if ready else 'live'}:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Predictor(ServerProcess):
    grpc_port: int = 0
    env: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.name

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def start_predictor(
    task: str,
    model_dir: Path,
    tmp_dir: Path,
    variant: str | None = None,
    allow_unverified: bool = True,
    extra_env: dict | None = None,
    ports: tuple[int, int] | None = None,
    args: list[str] | None = None,
) -> Predictor:
    """`python -m predictors TASK ...` on free ports, or on `ports` (http, grpc) to restart one
    where it was; returns at once (call `.wait()`)."""
    http_port, grpc_port = ports or (free_port(), free_port())
    cmd = [
        sys.executable,
        "-m",
        "predictors",
        task,
        "--model_dir",
        str(model_dir),
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
        "--grpc_max_send_message_length",
        GRPC_MAX,
        "--grpc_max_receive_message_length",
        GRPC_MAX,
    ]
    if variant:
        cmd += ["--variant", variant]
    cmd += args or []
    env = {**os.environ, "FORCE_CPU": "true", "PYTHONWARNINGS": "ignore", **(extra_env or {})}
    env["ALLOW_UNVERIFIED_WEIGHTS"] = "true" if allow_unverified else "false"
    log_path = tmp_dir / f"{task}-{http_port}.log"
    with log_path.open("a") as log:  # a restart on the same ports appends
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Predictor(task, http_port, process, log_path, grpc_port=grpc_port, env=env)


@contextmanager
def running_predictor(*args, **kwargs) -> Iterator[Predictor]:
    """`start_predictor`, ready on entry and stopped on exit."""
    server = start_predictor(*args, **kwargs)
    try:
        server.wait()
        yield server
    finally:
        server.stop()
