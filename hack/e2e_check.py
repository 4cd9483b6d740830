#!/usr/bin/env python3
"""Checks used by hack/kind-e2e (stdlib + Pillow + numpy, the project's venv).

e2e_check.py photo OUT.jpg [--side N]      write a test photo (scikit-image's astronaut: a face)
e2e_check.py image FILE [--like REF --scale S] [--type png]
                                           FILE decodes; with --like, its size is S x REF's
e2e_check.py json FILE KEY...              FILE is JSON holding every KEY at top level
e2e_check.py oip URL MODEL [--side N --scale S]
                                           OIP v2 REST: ready, then infer one UINT8 image
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image


def photo(out: Path, side: int) -> None:
    try:
        from skimage import data

        pixels = data.astronaut()
    except ImportError:  # a smooth synthetic picture when scikit-image is absent
        y, x = np.mgrid[0:512, 0:512]
        pixels = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    img = Image.fromarray(pixels)
    img.thumbnail((side, side))
    img.save(out, quality=92)
    print(f"{out}: {img.size[0]}x{img.size[1]}")


def image(path: Path, like: Path | None, scale: float, kind: str | None) -> None:
    with Image.open(path) as img:
        img.load()
        size, fmt = img.size, img.format
    if kind and fmt.lower() != kind.lower():
        sys.exit(f"{path}: {fmt}, expected {kind}")
    if like is not None:
        with Image.open(like) as ref:
            want = (round(ref.size[0] * scale), round(ref.size[1] * scale))
        if size != want:
            sys.exit(f"{path}: {size[0]}x{size[1]}, expected {want[0]}x{want[1]}")
    print(f"{path}: {fmt} {size[0]}x{size[1]} ok")


def json_keys(path: Path, keys: list[str]) -> None:
    doc = json.loads(path.read_text())
    missing = [k for k in keys if k not in doc]
    if missing:
        sys.exit(f"{path}: missing {missing} in {sorted(doc)}")
    print(f"{path}: has {keys}")


def oip(base: str, model: str, side: int, scale: int) -> None:
    with urllib.request.urlopen(f"{base}/v2/models/{model}/ready", timeout=30) as resp:
        if resp.status != 200:
            sys.exit(f"{model} not ready: HTTP {resp.status}")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(1, side, side, 3), dtype=np.uint8)
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "UINT8",
                "shape": list(pixels.shape),
                "data": pixels.ravel().tolist(),
            }
        ],
        "parameters": {"scale": scale},
    }
    req = urllib.request.Request(
        f"{base}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=600) as resp:
        answer = json.loads(resp.read())
    out = next(o for o in answer["outputs"] if o["name"] == "image")
    want = [1, side * scale, side * scale, 3]
    if out["datatype"] != "UINT8" or out["shape"] != want:
        sys.exit(f"OIP answer {out['datatype']} {out['shape']}, expected UINT8 {want}")
    print(f"OIP v2 {model}: UINT8 {out['shape']} ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("photo")
    p.add_argument("out", type=Path)
    p.add_argument("--side", type=int, default=256)
    p = sub.add_parser("image")
    p.add_argument("path", type=Path)
    p.add_argument("--like", type=Path)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--type")
    p = sub.add_parser("json")
    p.add_argument("path", type=Path)
    p.add_argument("keys", nargs="+")
    p = sub.add_parser("oip")
    p.add_argument("base")
    p.add_argument("model")
    p.add_argument("--side", type=int, default=32)
    p.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    if args.cmd == "photo":
        photo(args.out, args.side)
    elif args.cmd == "image":
        image(args.path, args.like, args.scale, args.type)
    elif args.cmd == "json":
        json_keys(args.path, args.keys)
    else:
        oip(args.base, args.model, args.side, args.scale)


if __name__ == "__main__":
    main()
