"""Image codecs for the gateway's answers, side by side on real photos upscaled like answers.

    flock /tmp/bench.lock .venv/bin/python bench/codecs.py [--sizes 2048 4096 8192] [--quick]

The photos are scikit-image's astronaut, coffee and chelsea, upscaled (cv2 Lanczos) to 2048,
4096 and 8192 px on the longer side (8192: astronaut only), like the answers of an x4 upscale.
Per codec: best-of wall and CPU seconds, the file size, and, for PNG, time and size against one
single-threaded cv2.imencode PNG at compression 1 (the goal: at most 0.3x its time, at most
1.3x its size, lossless). Candidates that are not installed are listed as such: install them by
hand to compare (`pip install imagecodecs pyvips pyvips-binary simplejpeg zlib-ng isal`); only
Pillow and fpng are dependencies of the gateway. Results: Markdown on stdout, JSON in
bench/results/codecs-<time>.json.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parent.parent
QUALITY = 95


def photos(side: int) -> dict[str, np.ndarray]:
    names = ("astronaut", "coffee", "chelsea") if side <= 4096 else ("astronaut",)
    out = {}
    for name in names:
        rgb = getattr(data, name)()
        h, w = rgb.shape[:2]
        scale = side / max(h, w)
        size = (round(w * scale), round(h * scale))
        out[name] = cv2.resize(rgb, size, interpolation=cv2.INTER_LANCZOS4)
    return out


def pillow(fmt: str, **options) -> Callable[[np.ndarray], bytes]:
    def encode(rgb: np.ndarray) -> bytes:
        out = io.BytesIO()
        Image.fromarray(rgb).save(out, fmt, **options)
        return out.getvalue()

    return encode


def cv2_encode(ext: str, flag: int, value: int) -> Callable[[np.ndarray], bytes]:
    def encode(rgb: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), [flag, value])
        assert ok
        return buf.tobytes()

    return encode


def optional(module: str, make: Callable[[object], Callable[[np.ndarray], bytes]]):
    """A candidate from a library that may not be installed: None then."""
    try:
        return make(importlib.import_module(module))
    except ImportError:
        return None


def vips(save: str, **options):
    def make(pyvips):
        def encode(rgb: np.ndarray) -> bytes:
            h, w, c = rgb.shape
            im = pyvips.Image.new_from_memory(np.ascontiguousarray(rgb).data, w, h, c, "uchar")
            return getattr(im, save)(**options)

        return encode

    return make


def candidates() -> dict[str, dict[str, Callable | None]]:
    png_opts = {"level": 1, "strategy": 3, "filter": 16}  # cv2's own settings, in libpng
    return {
        "png": {
            "cv2 PNG compression 1 (1 thread)": cv2_encode(".png", cv2.IMWRITE_PNG_COMPRESSION, 1),
            "Pillow PNG level 3 (before)": pillow("PNG", compress_level=3),
            "Pillow PNG level 1": pillow("PNG", compress_level=1),
            "imagecodecs libpng level 1, RLE, sub": optional(
                "imagecodecs", lambda ic: lambda rgb: ic.png_encode(rgb, **png_opts)
            ),
            "imagecodecs libspng level 1": optional(
                "imagecodecs", lambda ic: lambda rgb: ic.spng_encode(rgb, level=1)
            ),
            "pyvips PNG compression 1, sub": optional(
                "pyvips", vips("pngsave_buffer", compression=1, filter=1 << 4)
            ),
            "fpng (chosen)": optional("fpng", lambda f: f.from_ndarray),
        },
        "deflate of the raw pixels, level 1 (no PNG)": {
            "zlib": lambda rgb: zlib.compress(rgb.tobytes(), 1),
            "zlib-ng": optional("zlib_ng.zlib_ng", lambda z: lambda rgb: z.compress(rgb, 1)),
            "isal": optional("isal.isal_zlib", lambda z: lambda rgb: z.compress(rgb, 1)),
        },
        "webp": {
            "cv2 WebP quality 95": cv2_encode(".webp", cv2.IMWRITE_WEBP_QUALITY, QUALITY),
            "Pillow WebP q95 method 4 (before)": pillow("WEBP", quality=QUALITY, method=4),
            "Pillow WebP q95 method 0 (chosen)": pillow("WEBP", quality=QUALITY, method=0),
            "Pillow WebP q90 method 0": pillow("WEBP", quality=90, method=0),
            "imagecodecs WebP q95 method 0, 2 threads": optional(
                "imagecodecs",
                lambda ic: (
                    lambda rgb: ic.webp_encode(
                        rgb, level=QUALITY, method=0, numthreads=2, lossless=False
                    )
                ),
            ),
            "pyvips WebP q95 effort 0": optional("pyvips", vips("webpsave_buffer", Q=95, effort=0)),
        },
        "jpeg": {
            "cv2 JPEG quality 95": cv2_encode(".jpg", cv2.IMWRITE_JPEG_QUALITY, QUALITY),
            "Pillow JPEG q95 (chosen, as before)": pillow("JPEG", quality=QUALITY),
            "simplejpeg q95": optional(
                "simplejpeg",
                lambda s: lambda rgb: s.encode_jpeg(np.ascontiguousarray(rgb), quality=QUALITY),
            ),
            "imagecodecs libjpeg-turbo q95": optional(
                "imagecodecs", lambda ic: lambda rgb: ic.jpeg8_encode(rgb, level=QUALITY)
            ),
        },
    }


def timed(encode, rgb: np.ndarray, repeat: int) -> tuple[float, float, bytes]:
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        out = encode(rgb)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), bytes(out)


def lossless(body: bytes, rgb: np.ndarray) -> bool:
    return np.array_equal(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")), rgb)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--quick", action="store_true", help="2048 px, astronaut only")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    sizes = [2048] if args.quick else args.sizes
    rows = []
    for side in sizes:
        repeat = {2048: 3, 4096: 2}.get(side, 1)
        shots = photos(side)
        if args.quick:
            shots = {"astronaut": shots["astronaut"]}
        for photo, rgb in shots.items():
            anchor = None
            for kind, codecs in candidates().items():
                for name, encode in codecs.items():
                    row = {"side": side, "photo": photo, "kind": kind, "codec": name}
                    if encode is None:
                        rows.append({**row, "missing": True})
                        continue
                    wall, cpu, body = timed(encode, rgb, repeat)
                    row.update(wall_s=wall, cpu_s=cpu, bytes=len(body))
                    if kind == "png":
                        anchor = anchor or row
                        row["time_vs_cv2"] = wall / anchor["wall_s"]
                        row["size_vs_cv2"] = len(body) / anchor["bytes"]
                        row["lossless"] = lossless(body, rgb)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    print(table(rows))
    out = ROOT / "bench" / "results" / f"codecs-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"\n{out}")
    return 0


def table(rows: list[dict]) -> str:
    """One line per codec and size: medians over the photos of that size."""
    lines = [
        "| px | codec | wall s | CPU s | MB | time vs cv2 PNG | size vs cv2 PNG | lossless |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["side"], r["kind"], r["codec"]), []).append(r)
    for (side, _kind, codec), group in groups.items():
        if group[0].get("missing"):
            lines.append(f"| {side} | {codec} | not installed | | | | | |")
            continue

        def med(key, group=group):
            return float(np.median([g[key] for g in group]))

        ratio = (
            (f"{med('time_vs_cv2'):.2f}", f"{med('size_vs_cv2'):.2f}")
            if "time_vs_cv2" in group[0]
            else ("", "")
        )
        exact = "" if "lossless" not in group[0] else str(all(g["lossless"] for g in group))
        lines.append(
            f"| {side} | {codec} | {med('wall_s'):.3f} | {med('cpu_s'):.3f} "
            f"| {med('bytes') / 1e6:.2f} | {ratio[0]} | {ratio[1]} | {exact} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
