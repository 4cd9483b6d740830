"""Make the page's one-click example photos (transformer/static/examples/) from scikit-image's
sample data: small JPEGs (each under 60 KB), public domain or CC0 (see CREDITS.md there).

Run from the repository root: `.venv/bin/python hack/page_examples.py`. The output is
deterministic for a given scikit-image and Pillow; commit the files it writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

OUT = Path(__file__).resolve().parent.parent / "transformer" / "static" / "examples"
LIMIT = 60 * 1024
QUALITY = 85


def small(array: np.ndarray, width: int, height: int) -> Image.Image:
    return Image.fromarray(array).resize((width, height), Image.Resampling.LANCZOS)


def noisy(image: Image.Image, sigma: float, seed: int = 16) -> Image.Image:
    """Sensor-like Gaussian noise, for the restore (denoise) example."""
    rgb = np.asarray(image).astype(np.float32)
    rgb += np.random.default_rng(seed).normal(0, sigma, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).round().astype(np.uint8))


EXAMPLES = {
    # name: the image (a face -> face-restore; grey -> colorize; noise -> restore; small -> upscale)
    "astronaut.jpg": lambda: small(data.astronaut(), 320, 320),
    "camera.jpg": lambda: small(data.camera(), 320, 320),
    "coffee-noisy.jpg": lambda: noisy(small(data.coffee(), 360, 240), 12),
    "chelsea-small.jpg": lambda: small(data.chelsea(), 180, 120),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in EXAMPLES.items():
        path = OUT / name
        make().save(path, "JPEG", quality=QUALITY, optimize=True)
        size = path.stat().st_size
        assert size <= LIMIT, f"{name} is {size} bytes, over {LIMIT}"
        print(f"{path.relative_to(OUT.parent.parent.parent)}: {size / 1024:.1f} KB")


if __name__ == "__main__":
    main()
