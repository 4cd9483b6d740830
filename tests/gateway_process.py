"""Start the gateway (`python -m transformer`) and a silent TCP peer as real local processes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.servers import ROOT, ServerProcess, free_port, start_script_server

TASK_FLAGS = {
    "colorize": "--predictor_colorize",
    "restore": "--predictor_restore",
    "face-restore": "--predictor_face_restore",
    "upscale": "--predictor_upscale",
}


class Gateway(ServerProcess):
    @property
    def port(self) -> int:
        return self.http_port

    @property
    def url(self) -> str:
        return f"http://{self.http}"


def start_gateway(addresses: dict[str, str], tmp_dir: Path, env: dict | None = None) -> Gateway:
    """The gateway on a free port, predictors at `addresses` (task -> host:port), ready. Its
    jobs are kept under tmp_dir (DATA_DIR) unless `env` says where."""
    port = free_port()
    cmd = [sys.executable, "-m", "transformer"]
    cmd += ["--http_host", "127.0.0.1", "--http_port", str(port)]
    for task, address in addresses.items():
        cmd += [TASK_FLAGS[task], address]
    full_env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREDICTOR_", "MAX_", "MODEL_", "JOB_", "JOBS_"))
        and key not in ("DATA_DIR", "RESULTS_STORE")
    }
    full_env["DATA_DIR"] = str(tmp_dir / f"data-{port}")
    full_env.update(env or {})
    log_path = tmp_dir / f"gateway-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    gateway = Gateway("gateway", port, process, log_path)
    try:
        gateway.wait(timeout=60)
    except Exception:
        gateway.stop()
        raise
    return gateway


SILENT_PEER = """
import socket, sys, threading
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(16)
print(server.getsockname()[1], flush=True)
def drain(conn):
    while conn.recv(65536):
        pass
while True:
    conn, _ = server.accept()
    threading.Thread(target=drain, args=(conn,), daemon=True).start()
"""


def start_silent_peer() -> tuple[subprocess.Popen, str]:
    """A TCP server that accepts connections, reads what comes and never answers."""
    process = subprocess.Popen(
        [sys.executable, "-c", SILENT_PEER], stdout=subprocess.PIPE, text=True
    )
    port = int(process.stdout.readline())
    return process, f"127.0.0.1:{port}"


WRONG_PREDICTOR = """
import sys
import numpy as np
from kserve import Model, ModelServer
from kserve.protocol.infer_type import InferOutput, InferResponse

class Wrong(Model):
    def __init__(self):
        super().__init__(sys.argv[1])
        self.ready = True

    async def predict(self, payload, headers=None):
        out = InferOutput("image", [1, 2], "FP32")
        out.set_data_from_numpy(np.zeros((1, 2), np.float32), binary_data=True)
        return InferResponse(payload.id, self.name, [out], use_binary_outputs=True)

ModelServer(http_port=int(sys.argv[2]), grpc_port=int(sys.argv[3])).start([Wrong()])
"""


def start_wrong_predictor(task: str, log_path: Path) -> tuple[subprocess.Popen, str]:
    """A V2 server for `task` that answers every inference with a tensor of the wrong shape."""
    return start_script_server(WRONG_PREDICTOR, [task], log_path)


def encoded(array: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **options)
    return out.getvalue()


def decoded(body: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(body))
    im.load()
    return im
