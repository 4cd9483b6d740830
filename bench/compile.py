"""torch.compile against eager, in process, on this machine's device.

    flock /tmp/bench.lock .venv/bin/python bench/compile.py [--side 64] [--repeat 3]

The trained x4plus_anime_6B Real-ESRGAN (tests/ncnn_weights.py) and a NAFNet look-alike at the
official width: compile time (first call), then the best of `--repeat` calls, wall and CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path[0] = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parent.parent)
from tests import weights_factory  # noqa: E402
from tests.ncnn_weights import realesrgan_state  # noqa: E402


def timed(fn, x) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(x)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    from spandrel import ModelLoader

    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    nets = {
        "Real-ESRGAN x4anime": realesrgan_state("x4anime"),
        "NAFNet-SIDD width 64": weights_factory.nafnet_state(
            [2, 2, 4, 8], 12, [2, 2, 2, 2], width=64
        ),
    }
    print(f"device {device}, torch {torch.__version__}, {args.side} px, best of {args.repeat}")
    print("network | eager wall / CPU (s) | compiled wall / CPU (s) | first compiled call (s)")
    for name, state in nets.items():
        net = ModelLoader().load_from_state_dict(state).model.eval().to(device)
        x = torch.rand(1, 3, args.side, args.side, device=device)
        with torch.inference_mode():
            eager = min(timed(net, x) for _ in range(args.repeat))
            compiled = torch.compile(net)
            first = timed(compiled, x)[0]
            fast = min(timed(compiled, x) for _ in range(args.repeat))
        cells = [f"{eager[0]:.2f} / {eager[1]:.2f}", f"{fast[0]:.2f} / {fast[1]:.2f}"]
        print(f"{name} | {cells[0]} | {cells[1]} | {first:.1f}")


if __name__ == "__main__":
    main()
