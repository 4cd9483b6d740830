"""The shared tiler: seamless, exact for small receptive fields, batched, cancellable, and
retrying on CUDA OOM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spandrel.architectures.Compact import Compact

from predictors import tiling
from predictors.cancel import Cancelled


def _whole(net: torch.nn.Module, photo: torch.Tensor) -> np.ndarray:
    """The untiled answer, converted the plain torch way."""
    with torch.inference_mode():
        out = net(photo.float() / 255)
    return out[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def _levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int))


@pytest.fixture(scope="module")
def photo(astronaut) -> torch.Tensor:
    """A 100x130 uint8 [1, 3, H, W] view, as the predictors hand it to the tiler."""
    return torch.from_numpy(astronaut[100:200, 150:280].copy()).permute(2, 0, 1)[None]


def _compact(scale: int) -> torch.nn.Module:
    # SRVGGNetCompact with 4 body convs sees 6 px around each pixel: within the margin
    # (overlap - feather) / 2 = (32 - 16) / 2 = 8 px that every counted pixel keeps.
    torch.manual_seed(0)
    return Compact(num_feat=16, num_conv=4, upscale=scale).eval()


def _tiles(net, photo, **kwargs) -> np.ndarray:
    kwargs = {"tile": 64, "overlap": 32, "device": "cpu", **kwargs}
    with torch.inference_mode():
        return tiling.run_tiles(net, photo, **kwargs)


@pytest.mark.parametrize("scale", [1, 4])
def test_tiles_equal_the_whole_image_when_the_receptive_field_fits_the_margin(photo, scale):
    net = _compact(scale)
    whole, tiled = _whole(net, photo), _tiles(net, photo, scale=scale)
    assert tiled.shape == whole.shape == (100 * scale, 130 * scale, 3)
    assert tiled.dtype == np.uint8
    diff = _levels(tiled, whole)
    # float rounding only: a value on the .5 boundary may round the other way
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4


def test_the_whole_image_at_once_is_the_plain_forward(photo):
    net = _compact(2)
    assert _levels(_tiles(net, photo, scale=2, tile=0), _whole(net, photo)).max() <= 1


def test_batched_tiles_equal_one_tile_per_forward(photo):
    net, seen = _compact(4), []
    single = _tiles(net, photo, scale=4)

    def counting(x):
        seen.append(x.shape[0])
        return net(x)

    batched = _tiles(counting, photo, scale=4, tile_batch=5)
    assert seen == [5, 5, 2]  # 3 x 4 tiles of 64 px, all of one size
    diff = _levels(batched, single)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4


def test_device_blending_equals_host_blending(photo):
    # The device path (answer assembled where the tiles are, uint8 by torch) run on the CPU,
    # against the host path (OpenCV's conversion into a host answer).
    net = _compact(4)
    on_device = _tiles(net, photo, scale=4, tile_batch=2, on_device=True)
    on_host = _tiles(net, photo, scale=4, tile_batch=2, on_device=False)
    diff = _levels(on_device, on_host)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4


def test_half_precision_tiles_are_blended_in_float32(photo):
    net = _compact(1).to(torch.bfloat16)
    tiled = _tiles(net, photo, scale=1, dtype=torch.bfloat16)
    whole = _whole(net.float(), photo)
    assert _levels(tiled, whole).mean() < 2  # bf16 keeps 8 bits: about one grey level


def test_should_stop_cancels_between_tile_batches(photo):
    net, forwards = _compact(1), []

    def counting(x):
        forwards.append(x.shape[0])
        return net(x)

    with pytest.raises(Cancelled):
        _tiles(counting, photo, scale=1, tile_batch=3, should_stop=lambda: len(forwards) >= 2)
    assert forwards == [3, 3]


def test_progress_is_told_before_the_first_forward_and_after_each_batch(photo):
    reports = []
    _tiles(_compact(1), photo, scale=1, tile_batch=5, on_progress=lambda *r: reports.append(r))
    assert reports == [(0, 12), (5, 12), (10, 12), (12, 12)]  # 3 x 4 tiles of 64 px


def test_out_of_memory_halves_the_batch_then_the_tile(photo):
    seen = []

    def picky(tile: torch.Tensor) -> torch.Tensor:
        seen.append((tile.shape[0], max(tile.shape[-2:])))
        if tile.shape[0] > 1 or max(tile.shape[-2:]) > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated: no GPU here)")
        return tile * 0.5

    out = tiling.run_tiles_retrying(
        picky, photo, scale=1, tile=128, tile_batch=2, overlap=16, device="cpu"
    )
    expected = (photo[0].permute(1, 2, 0).float() / 2).round().byte().numpy()
    assert _levels(out, expected).max() <= 1
    assert seen[:3] == [(2, 128), (1, 128), (1, 64)]  # the batch halves first, then the tile


def test_out_of_memory_at_the_smallest_tile_is_raised(photo):
    def hopeless(tile):
        raise torch.cuda.OutOfMemoryError("simulated")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        tiling.run_tiles_retrying(hopeless, photo, scale=1, tile=0, overlap=16, device="cpu")
