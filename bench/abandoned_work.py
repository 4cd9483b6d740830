"""What tiny tiles and abandoned requests cost the next request, on a real restore predictor.

    flock /tmp/bench.lock .venv/bin/python bench/abandoned_work.py [--weights DIR] [--tile-cap S]

Starts `python -m predictors restore` (generated NAFNet weights, CPU) from the code on
PYTHONPATH, then measures:
1. `tile_size=8` on a 128 px photo: seconds until the answer (or the refusal), capped by
   --tile-cap (the call is abandoned then, and what it cost the next request is measured too);
2. a 1024 px restore in 64 px tiles (441 tiles) abandoned by its client after 1.5 s (deadline),
   then a 64 px request: how long that small request waited.
Prints wall seconds and the predictor process's CPU seconds for each (other work on the machine
slows wall time, not CPU time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import weights_factory
from tests.servers import start_predictor

CHANNEL = [
    ("grpc.max_send_message_length", 256 << 20),
    ("grpc.max_receive_message_length", 256 << 20),
]


def request(image: np.ndarray, **params: int) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="restore")
    message.inputs.add(name="image", datatype="UINT8", shape=[1, *image.shape])
    message.raw_input_contents.append(np.ascontiguousarray(image).tobytes())
    for key, value in params.items():
        message.parameters[key].int64_param = value
    return message


async def call(address: str, message, timeout: float | None) -> str:
    async with grpc.aio.insecure_channel(address, options=CHANNEL) as channel:
        try:
            await GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=timeout)
            return "OK"
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {(exc.details() or '')[:70]}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc, Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(address: str, message, pid: int, timeout: float | None = None):
    cpu = cpu_seconds(pid)
    start = time.monotonic()
    status = asyncio.run(call(address, message, timeout))
    return status, time.monotonic() - start, cpu_seconds(pid) - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="TEST_WEIGHTS_DIR-style folder (generated)")
    parser.add_argument("--tile-cap", type=float, default=120.0)
    args = parser.parse_args()
    if args.weights:
        weights_factory.CACHE = args.weights / weights_factory.CACHE_VERSION
    photo = data.astronaut()
    small, tiny_tiles_photo = photo[200:264, 200:264].copy(), photo[100:228, 150:278].copy()
    big = np.tile(photo, (2, 2, 1))
    with tempfile.TemporaryDirectory() as tmp:
        server = start_predictor(
            "restore", weights_factory.model_dir("restore", "denoise"), Path(tmp)
        )
        try:
            server.wait()
            process = server.process.pid
            address = server.grpc
            timed(address, request(small), process)  # warm up
            rows = [("small request alone", *timed(address, request(small), process))]
            rows.append(
                (
                    f"tile_size=8 on 128 px (cap {args.tile_cap:.0f} s)",
                    *timed(address, request(tiny_tiles_photo, tile_size=8), process, args.tile_cap),
                )
            )
            rows.append(("  then a small request", *timed(address, request(small), process)))
            rows.append(
                (
                    "1024 px, 441 tiles, deadline 1.5 s",
                    *timed(address, request(big, tile_size=64), process, 1.5),
                )
            )
            rows.append(("  then a small request", *timed(address, request(small), process)))
        finally:
            server.stop()
    print(f"{'case':40} {'status':50} {'wall s':>7} {'cpu s':>7}")
    for name, status, wall, cpu in rows:
        print(f"{name:40} {status:50} {wall:7.2f} {cpu:7.2f}")


if __name__ == "__main__":
    main()
