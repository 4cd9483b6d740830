"""Host work of the upscale predictor around a zero-cost network: tile blending, uint8 conversion.

    flock /tmp/bench.lock .venv/bin/python bench/host_work.py [--size 2048] [--tile 512]

One request runs in a fresh process (so its peak RSS is that request's) through
`UpscaleModel.enhance`, with the network replaced by nearest-neighbour upsampling. The CPU time of
those network calls is measured and subtracted: what remains is the predictor's own host work.
Prints process CPU seconds beside wall seconds (other work may share the machine) and peak RSS.
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
from types import SimpleNamespace

# bench/ must not come first (bench/predictors.py); PYTHONPATH=<checkout> measures another one.
sys.path[0] = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parent.parent)


class ZeroCostNet:
    """Nearest-neighbour x`scale`, timing its own CPU seconds."""

    def __init__(self, scale: int):
        self.scale = scale
        self.model = None
        self.cpu_s = 0.0

    def __call__(self, x):
        import torch.nn.functional as F

        start = time.process_time()
        out = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        self.cpu_s += time.process_time() - start
        return out


def one_request(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from predictors.upscale import UpscaleModel

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    model = UpscaleModel(Path("."), device=torch.device("cpu"))
    net = ZeroCostNet(4)
    model.loaded = SimpleNamespace(descriptor=net)
    params = {"scale": args.scale, "tile_size": args.tile}
    if args.tile_batch:
        params["tile_batch"] = args.tile_batch
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out, _ = model.enhance(photo, params)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert out.shape == (args.size * args.scale, args.size * args.scale, 3), out.shape
    return {
        "size": args.size,
        "scale": args.scale,
        "tile": args.tile,
        "threads": torch.get_num_threads(),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "network_cpu_s": round(net.cpu_s, 3),
        "host_cpu_s": round(cpu - net.cpu_s, 3),
        "rss_before_request_mb": round(rss_before),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--tile-batch", type=int, default=0, help="0: the predictor's default")
    parser.add_argument("--repeat", type=int, default=2, help="fresh processes; best is printed")
    parser.add_argument("--json", type=Path, help="write the runs here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_request(args)))
        return
    child = [sys.executable, __file__, "--child", *sys.argv[1:]]
    runs = [json.loads(subprocess.check_output(child).splitlines()[-1]) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r["host_cpu_s"])
    print(
        f"upscale x{args.scale} of a {args.size} px photo, tile {args.tile}, "
        f"{best['threads']} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"best of {args.repeat} fresh processes:\n"
        f"  host work {best['host_cpu_s']:.2f} CPU-s (network {best['network_cpu_s']:.2f} CPU-s "
        f"subtracted), request wall {best['wall_s']:.2f} s\n"
        f"  peak RSS {best['peak_rss_mb']} MB "
        f"({best['rss_before_request_mb']} MB before the request)"
    )
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
