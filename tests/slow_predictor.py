"""A V2 server that takes a chosen time per request, for the gateway's queue and cancel tests.

Not a model: the gateway's queueing, deadlines and cancellation are what is tested, and they need
a predictor whose time per request is exact (a real model's time on a shared CPU is not). It is a
real KServe ModelServer process serving `upscale` and `restore` over gRPC; each request sleeps
`tile_size` milliseconds, then answers its input image. It prints `start ID`, `done ID` or
`cancelled ID` per request, so a test can see what reached it and what was stopped.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.servers import ROOT, free_port, start_script_server

SLOW_PREDICTOR = """
import asyncio, sys
from kserve import Model, ModelServer
from kserve.protocol.infer_type import InferOutput, InferResponse

class Slow(Model):
    def __init__(self, name):
        super().__init__(name)
        self.ready = True

    async def predict(self, payload, headers=None):
        tile = payload.parameters.get("tile_size", 0)
        tile = getattr(tile, "int64_param", tile)
        image = payload.inputs[0].as_numpy()
        print("start", payload.id, flush=True)
        try:
            await asyncio.sleep(int(tile) / 1000)
        except asyncio.CancelledError:
            print("cancelled", payload.id, flush=True)
            raise
        print("done", payload.id, flush=True)
        out = InferOutput("image", list(image.shape), "UINT8")
        out.set_data_from_numpy(image, binary_data=True)
        return InferResponse(payload.id, self.name, [out], use_binary_outputs=True)

ModelServer(http_port=int(sys.argv[1]), grpc_port=int(sys.argv[2])).start(
    [Slow("upscale"), Slow("restore")]
)
"""


def start_slow_predictor(
    log_path: Path, grpc_port: int | None = None
) -> tuple[subprocess.Popen, str]:
    """The server, ready; returns the process and its gRPC address (grpc_port when given)."""
    ports = (free_port(), grpc_port) if grpc_port else None
    return start_script_server(SLOW_PREDICTOR, [], log_path, ports)


# The same, served by the predictors' own gRPC server (predictors/v2grpc.py), which also answers
# ModelStreamInfer: the `tile_size` ms are slept in TILES equal tiles, each reported as the real
# tiler reports its tiles ("upscale: tile 3 of 10"), so a job's progress moves within a call.
# With SLOW_ONE_AT_A_TIME=1 in its environment the calls take turns, as on one GPU (they queue
# in the model, as the real predictors' do), and `start` is printed when a call's turn comes.
TILED_SLOW_PREDICTOR = """
import asyncio, contextlib, os, sys
sys.path.insert(0, sys.argv[1])
from kserve import Model
from kserve.protocol.infer_type import InferOutput, InferResponse
from predictors import progress
from predictors.v2grpc import PredictorServer

TILES = int(sys.argv[2])
TURNS = asyncio.Lock() if os.environ.get("SLOW_ONE_AT_A_TIME") == "1" else None

class Slow(Model):
    def __init__(self, name):
        super().__init__(name)
        self.ready = True

    async def predict(self, payload, headers=None):
        tile = payload.parameters.get("tile_size", 0)
        tile = getattr(tile, "int64_param", tile)
        image = payload.inputs[0].as_numpy()
        async with TURNS or contextlib.nullcontext():
            print("start", payload.id, flush=True)
            try:
                for done in range(1, TILES + 1):
                    await asyncio.sleep(int(tile) / 1000 / TILES)
                    progress.tiles(done, TILES)
            except asyncio.CancelledError:
                print("cancelled", payload.id, flush=True)
                raise
            print("done", payload.id, flush=True)
        out = InferOutput("image", list(image.shape), "UINT8")
        out.set_data_from_numpy(image, binary_data=True)
        return InferResponse(payload.id, self.name, [out], use_binary_outputs=True)

PredictorServer(
    bind_address="127.0.0.1", http_port=int(sys.argv[3]), grpc_port=int(sys.argv[4])
).start([Slow("upscale"), Slow("restore")])
"""


def start_tiled_slow_predictor(
    log_path: Path,
    tiles: int = 10,
    ports: tuple[int, int] | None = None,
    env: dict | None = None,
) -> tuple[subprocess.Popen, str]:
    """The tiled server, ready; returns the process and its gRPC address (on `ports`, (http,
    grpc), when given). `env` may set MAX_INFLIGHT, the predictors' own cap (busy answers past
    it), and SLOW_ONE_AT_A_TIME."""
    args = [str(ROOT), str(tiles)]
    return start_script_server(TILED_SLOW_PREDICTOR, args, log_path, ports, env)
