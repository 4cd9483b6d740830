#!/usr/bin/env python3
"""End-to-end checks of a running photo-enhance, shared by hack/kind-e2e and the test suite
(tests/test_k8s_pods.py runs the same checks against the chart's pods started locally).
Stdlib + Pillow + numpy: the project's venv.

e2e_check.py gateway URL [--photo F] [--side N] [--out DIR] [--isvcs FILE.json] [--timeout S]
                                           every REST route: GET ones, then each POST route with
                                           a photo, checking each answer; with --isvcs (kubectl
                                           get inferenceservices -o json), /health must report
                                           each model ready with the variant its predictor runs,
                                           and each task's other models (models.<task>.others)
                                           ready and answering through the gateway (?model=)
e2e_check.py oip URL MODEL [--side N --scale S]
                                           OIP v2 REST: ready, then infer one UINT8 image
e2e_check.py photo OUT.jpg [--side N]      write a test photo (scikit-image's astronaut: a face)
e2e_check.py image FILE [--like REF --scale S] [--type png]
                                           FILE decodes; with --like, its size is S x REF's
e2e_check.py json FILE KEY...              FILE is JSON holding every KEY at top level
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# (route with query, output file, output size / input size or None, image type)
POST_ROUTES = (
    ("/colorize?render_factor=16", "colorize.png", 1, "png"),
    ("/v1/colorize?render_factor=16&output_format=jpg", "colorize-v1.jpg", 1, "jpeg"),
    ("/restore?tile_size=0", "restore.png", 1, "png"),
    ("/face-restore?fidelity=0.5&upscale=2", "face-restore.png", 2, "png"),
    ("/upscale?scale=2&tile_size=0", "upscale.png", 2, "png"),
    ("/v1/upscale?scale=2&output_format=webp", "upscale-v1.webp", 2, "webp"),
    ("/pipeline?width=512&height=512&render_factor=16", "pipeline.png", None, "png"),
)
GET_ROUTES = ("/health", "/openapi.json", "/docs", "/redoc")


class CheckFailed(Exception):
    """An answer that is not what a user of the install relies on."""


def photo(out: Path, side: int) -> Path:
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
    return out


def image(path: Path, like: Path | None = None, scale: float = 1.0, kind: str | None = None):
    with Image.open(path) as img:
        img.load()
        size, fmt = img.size, img.format
    if kind and fmt.lower() != kind.lower():
        raise CheckFailed(f"{path}: {fmt}, expected {kind}")
    if like is not None:
        with Image.open(like) as ref:
            want = (round(ref.size[0] * scale), round(ref.size[1] * scale))
        if size != want:
            raise CheckFailed(f"{path}: {size[0]}x{size[1]}, expected {want[0]}x{want[1]}")
    print(f"{path}: {fmt} {size[0]}x{size[1]} ok")


def json_keys(path: Path, keys: list[str]) -> dict:
    doc = json.loads(path.read_text())
    missing = [k for k in keys if k not in doc]
    if missing:
        raise CheckFailed(f"{path}: missing {missing} in {sorted(doc)}")
    print(f"{path}: has {keys}")
    return doc


def served_variants(isvcs: list[dict]) -> dict[str, str]:
    """task -> the --variant its predictor container runs with, from InferenceService objects
    (as `kubectl get -o json` lists them or as the chart renders them)."""
    variants = {}
    for isvc in isvcs:
        task = isvc["metadata"]["labels"]["photo-enhance.io/task"]
        args = isvc["spec"]["predictor"]["containers"][0]["args"]
        if any(a.startswith("--model_name=") for a in args):
            continue  # another model of the task (models.<task>.others), not its default
        (variant,) = [a.split("=", 1)[1] for a in args if a.startswith("--variant=")]
        variants[task] = variant
    return variants


def other_models(isvcs: list[dict]) -> list[tuple[str, str]]:
    """(task, model) of each task's other models (models.<task>.others): their predictors run
    with --model_name; `?model=<model>` reaches them through the gateway."""
    found = []
    for isvc in isvcs:
        args = isvc["spec"]["predictor"]["containers"][0]["args"]
        if any(a.startswith("--model_name=") for a in args):
            (name,) = [a.split("=", 1)[1] for a in args if a.startswith("--variant=")]
            found.append((isvc["metadata"]["labels"]["photo-enhance.io/task"], name))
    return found


def _get(url: str, out: Path, timeout: float) -> Path:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        out.write_bytes(resp.read())
    return out


def _post_file(url: str, path: Path, out: Path, timeout: float) -> None:
    """multipart/form-data upload of `path` as field `file` (what curl -F does)."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        (
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'.encode(),
            b"Content-Type: application/octet-stream\r\n\r\n",
            path.read_bytes(),
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
    req = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out.write_bytes(resp.read())
            print(f"{resp.status} {resp.headers.get('Content-Type')}  {url}")
    except urllib.error.HTTPError as exc:
        raise CheckFailed(f"POST {url}: HTTP {exc.code} {exc.read()[:300]!r}") from None


def gateway(
    base: str,
    out_dir: Path,
    photo_file: Path | None = None,
    side: int = 256,
    variants: dict[str, str] | None = None,
    timeout: float = 1200,
    routes: tuple[str, ...] | None = None,
    others: Sequence[tuple[str, str]] = (),
) -> None:
    """Every REST route of the gateway at `base` (or those of POST_ROUTES whose path is in
    `routes`), each answer checked; then each of `others` (task, model), ready in /health and
    answering its task's route with ?model= (an upscaler at its own scale)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    photo_file = photo_file or photo(out_dir / "photo.jpg", side)
    for route in GET_ROUTES:
        _get(base + route, out_dir / route.strip("/").replace("/", "_"), timeout=30)
    health = json_keys(out_dir / "health", ["status", "models"])
    for task, variant in (variants or {}).items():
        entry = health["models"].get(task) or {}
        if not entry.get("ready") or entry.get("variant") != variant:
            raise CheckFailed(f"/health: {task} is {entry}, expected ready with {variant}")
    json_keys(out_dir / "openapi.json", ["openapi", "paths"])
    for route, name, scale, kind in POST_ROUTES:
        if routes is not None and route.split("?")[0] not in routes:
            continue
        out = out_dir / name
        _post_file(base + route, photo_file, out, timeout)
        image(out, photo_file if scale else None, scale or 1.0, kind)
    for task, model in others:
        entry = {m["name"]: m for m in health["models"].get(task, {}).get("models", [])}
        entry = entry.get(model) or {}
        if not entry.get("ready"):
            raise CheckFailed(f"/health: {task} model {model} is {entry}, expected ready")
        route, _, scale, kind = next(r for r in POST_ROUTES if r[0].startswith(f"/{task}?"))
        if routes is not None and f"/{task}" not in routes:
            continue
        if task == "upscale":
            scale = entry.get("scale")
            if not scale:
                raise CheckFailed(f"/health: {task} model {model} reports no scale: {entry}")
            route = f"/upscale?scale={scale}&tile_size=0"
        out = out_dir / f"{task}-{model}.{kind}"
        _post_file(f"{base}{route}&model={model}", photo_file, out, timeout)
        image(out, photo_file if scale else None, scale or 1.0, kind)


def oip(base: str, model: str, side: int = 32, scale: int = 2) -> None:
    with urllib.request.urlopen(f"{base}/v2/models/{model}/ready", timeout=30) as resp:
        if resp.status != 200:
            raise CheckFailed(f"{model} not ready: HTTP {resp.status}")
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
        raise CheckFailed(f"OIP answer {out['datatype']} {out['shape']}, expected UINT8 {want}")
    print(f"OIP v2 {model}: UINT8 {out['shape']} ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("gateway")
    p.add_argument("base")
    p.add_argument("--photo", type=Path)
    p.add_argument("--side", type=int, default=256)
    p.add_argument("--out", type=Path)
    p.add_argument("--isvcs", type=Path, help="kubectl get inferenceservices -o json")
    p.add_argument("--timeout", type=float, default=1200)
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
    try:
        if args.cmd == "gateway":
            variants, others = None, []
            if args.isvcs:
                isvcs = json.loads(args.isvcs.read_text())["items"]
                variants, others = served_variants(isvcs), other_models(isvcs)
            out = args.out or Path(tempfile.mkdtemp(prefix="photo-enhance-e2e."))
            gateway(
                args.base.rstrip("/"),
                out,
                args.photo,
                args.side,
                variants,
                args.timeout,
                others=others,
            )
        elif args.cmd == "photo":
            photo(args.out, args.side)
        elif args.cmd == "image":
            image(args.path, args.like, args.scale, args.type)
        elif args.cmd == "json":
            json_keys(args.path, args.keys)
        else:
            oip(args.base, args.model, args.side, args.scale)
    except CheckFailed as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
