"""The gateway's overhead: end-to-end time per route next to the predictor's own time.

    .venv/bin/python bench/gateway.py [--sizes 256 512] [--repeat 3] [--weights-dir DIR]

Starts the four predictors (generated test weights unless --weights-dir names a folder laid out
<task>/<variant>/<files>, read with the MODEL_* variants) and the gateway on 127.0.0.1. For each
route and size it times, on the same astronaut photo:
  - predictor: the V2 gRPC call straight to the predictor (Triton's client), same parameters;
  - gateway:   POST of the PNG to the gateway until the encoded PNG answer is read;
  - in-gateway predictor time: the gateway's own gRPC time (its Server-Timing header).
Medians of --repeat runs after one warm-up. Results: a Markdown table on stdout and
bench/results/gateway-<time>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import servers, weights_factory  # noqa: E402
from tests.gateway_process import start_gateway  # noqa: E402
from tests.v2clients import infer_grpc  # noqa: E402

GENERATED = {"colorize": "paper_tiny", "restore": "denoise", "face-restore": "v0.1",
             "upscale": "x4plus"}  # fmt: skip
VARIANT_ENV = {"colorize": "MODEL_COLORIZE", "restore": "MODEL_RESTORE",
               "face-restore": "MODEL_FACE", "upscale": "MODEL_UPSCALE"}  # fmt: skip
DEFAULTS = {"colorize": "modelscope", "restore": "denoise", "face-restore": "v0.1",
            "upscale": "x4plus"}  # fmt: skip
# The route's parameters; only_center_face keeps face-restore to one face with random weights.
ROUTES = {
    "colorize": {"render_factor": 32},
    "restore": {"tile_size": 0},
    "face-restore": {"fidelity": 0.5, "upscale": 2, "only_center_face": True},
    "upscale": {"scale": 4, "tile_size": 512},
}


def photo(side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.LANCZOS))


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def server_timing(reply: httpx.Response) -> float:
    match = re.search(r"predictor;dur=([0-9.]+)", reply.headers.get("server-timing", ""))
    return float(match[1]) / 1000 if match else float("nan")


def measure(client, predictors, route, params, image, repeat) -> dict:
    body = png(image)

    def through_gateway():
        reply = client.post(f"/{route}", params=params, files={"file": ("p.png", body)})
        reply.raise_for_status()
        return reply

    def direct():
        grpc_params = {k: (repr(v) if isinstance(v, float) else v) for k, v in params.items()}
        return infer_grpc(predictors[route].grpc, route, image, **grpc_params)

    through_gateway(), direct()  # warm-up: first calls allocate and compile
    gateway_s, inside_s, direct_s = [], [], []
    for _ in range(repeat):
        seconds, reply = timed(through_gateway)
        gateway_s.append(seconds)
        inside_s.append(server_timing(reply))
        direct_s.append(timed(direct)[0])
    return {
        "gateway_s": statistics.median(gateway_s),
        "gateway_predictor_s": statistics.median(inside_s),
        "predictor_s": statistics.median(direct_s),
    }


def measure_pipeline(client, image, repeat) -> dict:
    body = png(image)
    params = {"width": 1024, "height": 1024, "render_factor": 32, "upscale_tile_size": 512,
              "only_center_face": True}  # fmt: skip
    client.post("/pipeline", params=params, files={"file": ("p.png", body)}).raise_for_status()
    gateway_s, inside_s = [], []
    for _ in range(repeat):
        seconds, reply = timed(
            lambda: client.post("/pipeline", params=params, files={"file": ("p.png", body)})
        )
        reply.raise_for_status()
        gateway_s.append(seconds)
        inside_s.append(server_timing(reply))
    return {
        "gateway_s": statistics.median(gateway_s),
        "gateway_predictor_s": statistics.median(inside_s),
        "predictor_s": statistics.median(inside_s),  # the chain's predictor calls, as measured
    }


def table(rows: list[dict], weights_dir) -> str:
    """Overhead two ways: against a direct V2 call (includes the predictor's run-to-run spread
    on a shared machine) and against the gateway's own predictor time (the gateway's work only:
    upload, decode, tensor, encode)."""
    lines = [
        f"CPU: {os.cpu_count()} cores; weights: {weights_dir or 'generated test weights'}",
        "| route | px | predictor, direct V2 gRPC (s) | gateway end-to-end (s) | ratio "
        "| predictor inside the gateway (s) | gateway's own work (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        own = r["gateway_s"] - r["gateway_predictor_s"]
        lines.append(
            f"| {r['route']} | {r['side']} | {r['predictor_s']:.3f} | {r['gateway_s']:.3f} "
            f"| {r['ratio']:.2f} | {r['gateway_predictor_s']:.3f} | {own:.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--weights-dir", type=Path, help="real weights (default: generated)")
    parser.add_argument("--routes", nargs="+", default=[*ROUTES, "pipeline"])
    args = parser.parse_args()

    if args.weights_dir:
        variants = {t: os.environ.get(VARIANT_ENV[t]) or DEFAULTS[t] for t in ROUTES}
        folders = {t: args.weights_dir / t / v for t, v in variants.items()}
    else:
        variants = GENERATED
        folders = {t: weights_factory.model_dir(t, v) for t, v in variants.items()}
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    predictors = {
        t: servers.start_predictor(t, folders[t], tmp, variants[t], extra_env={}) for t in ROUTES
    }
    gateway = None
    rows = []
    try:
        for p in predictors.values():
            p.wait(timeout=600)
        gateway = start_gateway(
            {t: p.grpc for t, p in predictors.items()}, tmp,
            env={VARIANT_ENV[t]: v for t, v in variants.items()},
        )  # fmt: skip
        with httpx.Client(base_url=gateway.url, timeout=900) as client:
            for side in args.sizes:
                image = photo(side)
                for route in args.routes:
                    if route == "pipeline":
                        result = measure_pipeline(client, image, args.repeat)
                    else:
                        result = measure(
                            client, predictors, route, ROUTES[route], image, args.repeat
                        )
                    row = {"route": route, "side": side, **result}
                    row["overhead_s"] = row["gateway_s"] - row["predictor_s"]
                    row["ratio"] = row["gateway_s"] / row["predictor_s"]
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        if gateway:
            gateway.stop()
        for p in predictors.values():
            p.stop()

    print(table(rows, args.weights_dir))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gateway-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(rows, indent=2))
    print(f"\n{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
