"""The shared tiler: seamless, exact for small receptive fields, and retrying on CUDA OOM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spandrel import ModelLoader
from spandrel.architectures.Compact import Compact

from predictors import tiling


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return t[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def photo(astronaut) -> torch.Tensor:
    return torch.from_numpy(astronaut[100:300, 150:380].copy()).permute(2, 0, 1)[None] / 255


@pytest.mark.parametrize("scale", [1, 4])
def test_tiles_equal_the_whole_image_when_the_receptive_field_fits_the_overlap(photo, scale):
    # SRVGGNetCompact with 4 body convs sees 6 px around each pixel: within overlap/4 = 8.
    torch.manual_seed(0)
    net = Compact(num_feat=16, num_conv=4, upscale=scale).eval()
    with torch.inference_mode():
        whole = tiling.run_tiles(net, photo, scale=scale, tile=0, overlap=32, device="cpu")
        tiled = tiling.run_tiles(net, photo, scale=scale, tile=64, overlap=32, device="cpu")
    assert tiled.shape == whole.shape == (1, 3, 200 * scale, 230 * scale)
    assert (tiled - whole).abs().max() < 1e-3  # float rounding only: 0.26 grey levels


def test_realesrgan_tiled_differs_from_untiled_by_little(weights, photo):
    path = weights.model_dir("upscale", "x4plus") / "RealESRGAN_x4plus.pth"
    model = ModelLoader().load_from_file(path).eval()
    with torch.inference_mode():
        whole, tiled = (
            _to_uint8(tiling.run_tiles(model, photo, scale=4, tile=t, overlap=32, device="cpu"))
            for t in (0, 96)
        )
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    print(
        f"Real-ESRGAN (generated x4plus), tile 96 / overlap 32 vs whole image: "
        f"max {diff.max()} grey levels, mean {diff.mean():.4f}, "
        f"{(diff > 1).mean() * 100:.3f}% of values differ by more than 1"
    )
    assert diff.mean() < 0.5 and np.percentile(diff, 99.9) <= 8


def test_out_of_memory_halves_the_tile_until_it_fits(photo):
    seen = []

    def picky(tile: torch.Tensor) -> torch.Tensor:
        seen.append(max(tile.shape[-2:]))
        if max(tile.shape[-2:]) > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated: no GPU here)")
        return tile * 2

    out = tiling.run_tiles_retrying(picky, photo, scale=1, tile=256, overlap=16, device="cpu")
    assert torch.allclose(out, photo * 2, atol=1e-6)
    assert seen[:3] == [230, 128, 64]  # whole image (tile 256 >= sides), 128, then 64 tiles


def test_out_of_memory_at_the_smallest_tile_is_raised(photo):
    def hopeless(tile):
        raise torch.cuda.OutOfMemoryError("simulated")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        tiling.run_tiles_retrying(hopeless, photo, scale=1, tile=0, overlap=16, device="cpu")
