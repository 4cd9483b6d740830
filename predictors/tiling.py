"""Overlapped tiles with feathered blending, shared by every model that can tile.

The full image stays on the host; one tile at a time moves to the device. Neighbouring tiles
overlap by `overlap` input pixels and cross-fade over the middle half of the overlap, so a tile's
border pixels (whose receptive field was cut off) never count. The result equals the untiled one
whenever the model's receptive-field radius is at most overlap/4.

A CUDA out-of-memory error halves the tile and tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from .cancel import Cancelled

log = logging.getLogger(__name__)

Model = Callable[[torch.Tensor], torch.Tensor]
MIN_TILE = 64


def _starts(length: int, tile: int, overlap: int, align: int) -> list[int]:
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = [*range(0, length - tile, stride), length - tile]
    return [s - s % align for s in starts]


def _ramp(size: int, overlap: int, scale: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
    """Per-output-pixel weight along one axis: 0 near an inner edge, 1 past the overlap."""
    distance = (torch.arange(size, dtype=torch.float32) + 0.5) / scale
    weight = torch.ones(size)
    quarter = overlap / 4
    rise = lambda d: ((d - quarter) / (2 * quarter)).clamp(0, 1)  # noqa: E731
    if fade_start:
        weight = torch.minimum(weight, rise(distance))
    if fade_end:
        weight = torch.minimum(weight, rise(size / scale - distance))
    return weight


def run_tiles(
    model: Model,
    image: torch.Tensor,
    *,
    scale: int,
    tile: int,
    overlap: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    align: int = 1,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """`image` is [1, C, H, W] float on the host; returns [1, C, H*scale, W*scale] on the host.

    `should_stop` is asked before each tile; when it says True, `Cancelled` is raised.
    """
    _, channels, height, width = image.shape
    if tile <= 0 or (tile >= height and tile >= width):
        return model(image.to(device, dtype)).float().cpu()
    tile -= tile % align
    overlap = min(overlap, tile // 4)
    out = torch.zeros(1, channels, height * scale, width * scale)
    weights = torch.zeros(1, 1, height * scale, width * scale)
    for y in _starts(height, tile, overlap, align):
        for x in _starts(width, tile, overlap, align):
            if should_stop is not None and should_stop():
                raise Cancelled("stopped between tiles")
            th, tw = min(tile, height - y), min(tile, width - x)
            patch = image[:, :, y : y + th, x : x + tw].to(device, dtype)
            result = model(patch).float().cpu()
            wy = _ramp(th * scale, overlap, scale, y > 0, y + th < height)
            wx = _ramp(tw * scale, overlap, scale, x > 0, x + tw < width)
            w = (wy[:, None] * wx[None, :])[None, None]
            ys, xs = slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale)
            out[:, :, ys, xs] += result * w
            weights[:, :, ys, xs] += w
    return out / weights


def run_tiles_retrying(model: Model, image: torch.Tensor, *, tile: int, **kwargs) -> torch.Tensor:
    """`run_tiles`, halving the tile after each CUDA out-of-memory error."""
    while True:
        try:
            return run_tiles(model, image, tile=tile, **kwargs)
        except torch.cuda.OutOfMemoryError:
            current = tile if tile > 0 else max(image.shape[-2:])
            tile = current // 2
            if tile < MIN_TILE:
                raise
            log.warning("CUDA out of memory with tile %d; retrying with tile %d", current, tile)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
