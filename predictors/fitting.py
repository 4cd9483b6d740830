"""Running any spandrel image model over a photo as its architecture asks (ImageModelDescriptor):

- size requirements (minimum side, multiple of, square) are met by edge padding, cropped after;
- tiling follows the architecture's advice: tiles where it is supported; the whole image where
  spandrel discourages tiling, unless the image is over WHOLE_IMAGE_MAX_PIXELS (the memory
  bound: then tiles after all, with a warning), and always where the network tiles internally.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from spandrel import ImageModelDescriptor, ModelTiling

from . import cancel, progress
from .limits import env_int
from .tiling import run_tiles_retrying

log = logging.getLogger(__name__)

# 1024 x 1024 input pixels: a whole-image forward of the transformers that discourage tiling
# (SCUNet, SwinIR-like) stays within a few GB at this size.
WHOLE_IMAGE_MAX_PIXELS = env_int("WHOLE_IMAGE_MAX_PIXELS", 1024 * 1024)
TILE_WHEN_TOO_LARGE = 512


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def padded_size(descriptor: ImageModelDescriptor, height: int, width: int) -> tuple[int, int]:
    req = descriptor.size_requirements
    height = _round_up(max(height, req.minimum), req.multiple_of)
    width = _round_up(max(width, req.minimum), req.multiple_of)
    if req.square:
        height = width = max(height, width)
    return height, width


def choose_tile(descriptor: ImageModelDescriptor, tile: int, height: int, width: int) -> int:
    """The tile the architecture allows for `tile` (0: the whole image)."""
    req = descriptor.size_requirements
    if descriptor.tiling == ModelTiling.INTERNAL or req.square:
        return 0
    if descriptor.tiling == ModelTiling.DISCOURAGED:
        if height * width <= WHOLE_IMAGE_MAX_PIXELS:
            return 0
        tile = tile or TILE_WHEN_TOO_LARGE
        log.warning(
            "%s discourages tiling, but %dx%d is over WHOLE_IMAGE_MAX_PIXELS: tiles of %d",
            descriptor.architecture.name,
            width,
            height,
            tile,
        )
    if tile <= 0:
        return 0
    return _round_up(max(tile, req.minimum), req.multiple_of)


def run_fitted(
    net: Callable[[torch.Tensor], torch.Tensor],
    descriptor: ImageModelDescriptor,
    rgb: np.ndarray,
    *,
    tile: int,
    overlap: int,
    feather: int | None = None,
    **tiling,
) -> np.ndarray:
    """`net` over the HxWx3 uint8 `rgb`, padded and tiled as `descriptor` asks; the answer is
    (H x scale, W x scale, 3) uint8."""
    height, width = rgb.shape[:2]
    padded_h, padded_w = padded_size(descriptor, height, width)
    if (padded_h, padded_w) != (height, width):
        rgb = np.pad(rgb, ((0, padded_h - height), (0, padded_w - width), (0, 0)), mode="edge")
    if not rgb.flags.writeable:
        rgb = rgb.copy()
    scale = descriptor.scale
    result = run_tiles_retrying(
        net,
        torch.from_numpy(rgb).permute(2, 0, 1)[None],
        scale=scale,
        tile=choose_tile(descriptor, tile, padded_h, padded_w),
        overlap=overlap,
        feather=feather,
        should_stop=cancel.should_stop,
        on_progress=progress.tiles,
        align=descriptor.size_requirements.multiple_of,
        **tiling,
    )
    return result[: height * scale, : width * scale]
