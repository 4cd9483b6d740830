"""Peak memory (RSS) of the colorize predictor against `render_factor`, one process per case.

    flock /tmp/bench.lock .venv/bin/python bench/colorize_memory.py \
        [--factors 16 32 48 64 100] [--encoder tiny large] [--weights DIR]

`tiny` loads the paper_tiny file from --weights (the generated test weights by default) through
the predictor's own loading path; `large` swaps in DDColor's ConvNeXt-L network (the modelscope
and artistic variants) with random weights, since the official files cannot be downloaded
everywhere: memory and time match the official files, pixels do not. The input is a 64 px image:
DDColor's cost depends on render_factor (its input side is 16 x render_factor), not on the photo.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_case(encoder: str, factor: int, weights: Path) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from predictors.colorize import ColorizeModel

    class Colorize(ColorizeModel):
        net = None  # a plain attribute, so that the large network can replace the loaded one

    torch.set_grad_enabled(False)
    model = Colorize(weights / "colorize" / "paper_tiny", "paper_tiny", allow_unverified=True)
    model.device = torch.device("cpu")
    assert model.load(), model.load_error
    model.net = model.loaded.descriptor.model
    if encoder == "large":
        from tests.weights_factory import ddcolor_net

        model.net = ddcolor_net("convnext-l", 512).eval()
        model.loaded = None
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    loaded = rss_mb()
    cpu, wall = time.process_time(), time.perf_counter()
    with torch.inference_mode():
        model.enhance(image, {"render_factor": factor})
    return {
        "encoder": encoder,
        "render_factor": factor,
        "loaded_mb": round(loaded),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "wall_s": round(time.perf_counter() - wall, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[16, 32, 48, 64, 100])
    parser.add_argument("--encoder", nargs="+", default=["tiny", "large"])
    parser.add_argument("--weights", type=Path, default=ROOT / ".cache" / "test-weights" / "v5")
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(one_case(args.case[0], int(args.case[1]), args.weights)))
        return
    print("encoder  render_factor  input px  loaded MB  peak RSS MB  wall s  cpu s")
    for encoder in args.encoder:
        for factor in args.factors:
            cmd = [sys.executable, __file__, "--weights", str(args.weights)]
            done = subprocess.run(
                [*cmd, "--case", encoder, str(factor)], capture_output=True, text=True
            )
            if done.returncode:
                print(f"{encoder} {factor}: failed\n{done.stderr[-2000:]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            side = -(-16 * factor // 32) * 32
            print(
                f"{encoder:7}  {factor:13}  {side:8}  {r['loaded_mb']:9}  {r['peak_mb']:11}"
                f"  {r['wall_s']:6}  {r['cpu_s']:5}",
                flush=True,
            )


if __name__ == "__main__":
    main()
