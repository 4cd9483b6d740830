"""A real Redis for the tests: Debian's redis-server (`make test` installs it; REDIS_SERVER points
at another) on a free 127.0.0.1 port, without persistence, stopped at the end."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.servers import free_port

REDIS_SERVER = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")


@dataclass
class RedisServer:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, decode_responses=True)

    def pause(self) -> None:
        """Unreachable as a partitioned or hung server is: it stops answering, keeps its data."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.process.kill()
        self.process.wait()


def executable() -> str:
    found = shutil.which(REDIS_SERVER)
    if found is None:
        pytest.fail(
            f"{REDIS_SERVER} is missing: `make test` installs Debian's redis-server "
            "(apt-get install -y redis-server), or set REDIS_SERVER=/path/to/redis-server"
        )
    return found


def start_redis(log_dir: Path) -> RedisServer:
    port = free_port()
    log = (log_dir / f"redis-{port}.log").open("w")
    process = subprocess.Popen(
        [
            executable(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(log_dir),
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    server = RedisServer(process, port)
    deadline = time.monotonic() + 30
    while True:
        try:
            if server.client().ping():
                return server
        except redis.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"redis-server did not start; see {log.name}")
        time.sleep(0.05)
