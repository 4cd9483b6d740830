"""Overlapped tiles, several per forward, blended straight into a uint8 answer.

Along each axis, tiles of one size start `tile - overlap` apart (the last one flush with the
edge). Between two neighbours the answer is cut in the middle of their overlap and cross-faded
over `feather` input pixels around the cut, so every pixel that counts lies at least
(overlap - feather) / 2 input pixels inside its tile. The tiled answer therefore equals the
untiled one when the model's receptive-field radius is at most that margin. Real-ESRGAN's is
hundreds of pixels: its tiles differ from the whole image by an amount that shrinks as the margin
grows (measured with the trained weights: README, "Tiling fidelity").

Every output pixel is written once, as uint8 converted on the device: the part of a tile that no
neighbour covers goes straight into the answer; only the cross-fade bands are summed in float32,
in small buffers freed as soon as their last tile has arrived. On CUDA the answer is assembled in
device memory when it fits there, and copied back once, into pinned memory.

A CUDA out-of-memory error halves the tile batch, then the tile, and tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .cancel import Cancelled

log = logging.getLogger(__name__)

Model = Callable[[torch.Tensor], torch.Tensor]
MIN_TILE = 64
# On CPU the uint8 conversion runs over this many rows at a time, so its steps stay in cache.
CPU_ROWS = 64
DTYPE = torch.float32  # of the cross-fade sums, whatever the model's precision


@dataclass(frozen=True)
class _Span:
    """Output pixels [start, stop) along one axis, and the weight of each tile covering them."""

    start: int
    stop: int
    weights: dict[int, torch.Tensor | None]  # tile index -> per-pixel weights (None: all 1)


def _starts(length: int, tile: int, overlap: int, align: int) -> list[int]:
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = [*range(0, length - tile, stride), length - tile]
    return [s - s % align for s in starts]


def _spans(
    starts: list[int], tile: int, length: int, feather: int, scale: int, device: torch.device
) -> list[_Span]:
    """Cut the axis in the middle of each overlap; cross-fade over `feather` px around the cut."""
    spans, position = [], 0
    for k in range(len(starts) - 1):
        low, high = starts[k + 1], starts[k] + tile  # where tiles k and k+1 overlap
        centre, half = (low + high) / 2, min(feather, high - low) / 2
        band_start = max(position, round((centre - half) * scale))
        band_stop = max(band_start, round((centre + half) * scale))
        if band_start > position:
            spans.append(_Span(position, band_start, {k: None}))
        if band_stop > band_start:
            ramp = (torch.arange(band_stop - band_start, device=device) + 0.5) / (
                band_stop - band_start
            )
            spans.append(_Span(band_start, band_stop, {k: 1 - ramp, k + 1: ramp}))
        position = band_stop
    spans.append(_Span(position, length * scale, {len(starts) - 1: None}))
    return spans


def to_uint8(chw: torch.Tensor, out_hwc: torch.Tensor, with_torch: bool = False) -> None:
    """Write [C, H, W] floats in 0..1 into a [H, W, C] uint8 tensor, rounded and clamped.

    On the host OpenCV does it (saturating, rounding, interleaving) about 30x faster than torch's
    permuted copies; elsewhere, or `with_torch`, torch does it where the floats are.
    """
    if chw.device.type == "cpu" and not with_torch:
        planes, out = chw.float().numpy(), out_hwc.numpy()
        for row in range(0, planes.shape[1], CPU_ROWS):
            rows = [cv2.multiply(p[row : row + CPU_ROWS], 255.0, dtype=cv2.CV_8U) for p in planes]
            cv2.merge(rows, dst=out[row : row + CPU_ROWS])  # a view: written in place
        return
    rows = chw.float().clamp(0, 1).mul_(255).round_().to(torch.uint8)
    out_hwc.copy_(rows.permute(1, 2, 0), non_blocking=True)


class _Canvas:
    """The answer being assembled, plus the cross-fade bands still waiting for a tile."""

    def __init__(
        self, out: torch.Tensor, rows: list[_Span], cols: list[_Span], scale: int, with_torch: bool
    ):
        self.out, self.rows, self.cols, self.scale = out, rows, cols, scale
        self.with_torch = with_torch
        self.pending: dict[tuple[int, int], list] = {}

    def add(self, i: int, j: int, y: int, x: int, result: torch.Tensor) -> None:
        """Tile (i, j), whose input origin is (y, x), gave `result` [C, h, w]."""
        oy, ox = y * self.scale, x * self.scale
        for r, row in enumerate(self.rows):
            if i not in row.weights:
                continue
            for c, col in enumerate(self.cols):
                if j not in col.weights:
                    continue
                part = result[:, row.start - oy : row.stop - oy, col.start - ox : col.stop - ox]
                target = self.out[row.start : row.stop, col.start : col.stop]
                sharers = len(row.weights) * len(col.weights)
                if sharers == 1:
                    to_uint8(part, target, self.with_torch)
                    continue
                weight = _outer(row.weights[i], col.weights[j], part)
                band = self.pending.get((r, c))
                if band is None:
                    self.pending[(r, c)] = band = [part.to(DTYPE) * weight, 1]
                else:
                    band[0].addcmul_(part.to(DTYPE), weight)
                    band[1] += 1
                if band[1] == sharers:
                    to_uint8(self.pending.pop((r, c))[0], target, self.with_torch)


def _outer(wy: torch.Tensor | None, wx: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if wy is None:
        return wx[None, :]
    if wx is None:
        return wy[:, None]
    return wy[:, None] * wx[None, :]


def _assemble_on_device(device: torch.device, answer_bytes: int) -> bool:
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return answer_bytes < free // 4  # leave most of it to the network's activations


def run_tiles(
    model: Model,
    image: torch.Tensor,
    *,
    scale: int,
    tile: int,
    overlap: int,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    align: int = 1,
    feather: int | None = None,
    tile_batch: int = 1,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_device: bool | None = None,
) -> np.ndarray:
    """Run `model` over `image` [1, C, H, W] on the host, uint8 (0..255) or float (0..1).

    Returns the answer as an (H*scale, W*scale, C) uint8 array. `tile` <= 0 means the whole
    image at once; `feather` defaults to half the overlap; `tile_batch` equal-size tiles go
    through each forward; `should_stop` is asked before each forward and raises `Cancelled`;
    `on_progress(done, total)` is told the tiles done, 0 before the first forward and after each;
    `on_device` forces (True) or forbids (False) assembling the answer on the device.
    """
    device = torch.device(device)
    _, channels, height, width = image.shape
    if tile <= 0:
        tile = max(height, width)
    tile = max(tile - tile % align, align)
    overlap = min(overlap, tile // 2)
    feather = overlap // 2 if feather is None else min(feather, overlap)
    tile_h, tile_w = min(tile, height), min(tile, width)
    tops, lefts = _starts(height, tile, overlap, align), _starts(width, tile, overlap, align)
    shape = (height * scale, width * scale, channels)
    if on_device is None:
        on_device = _assemble_on_device(device, int(np.prod(shape)))
    out = torch.empty(shape, dtype=torch.uint8, device=device if on_device else "cpu")
    canvas = _Canvas(
        out,
        _spans(tops, tile_h, height, feather, scale, device),
        _spans(lefts, tile_w, width, feather, scale, device),
        scale,
        with_torch=on_device,
    )
    tiles = [(i, j) for i in range(len(tops)) for j in range(len(lefts))]
    if on_progress is not None:
        on_progress(0, len(tiles))
    for first in range(0, len(tiles), tile_batch):
        if should_stop is not None and should_stop():
            raise Cancelled("stopped between tiles")
        batch = tiles[first : first + tile_batch]
        crops = [image[:, :, tops[i] :, lefts[j] :][:, :, :tile_h, :tile_w] for i, j in batch]
        patches = torch.cat(crops)
        results = model(_to_device(patches, device, dtype))
        for (i, j), result in zip(batch, results, strict=True):
            canvas.add(i, j, tops[i], lefts[j], result)
        if on_progress is not None:
            on_progress(first + len(batch), len(tiles))
    return _to_host(out)


def _to_device(patches: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if device.type == "cuda":
        patches = patches.pin_memory()
    moved = patches.to(device, non_blocking=True)
    if patches.dtype == torch.uint8:
        return moved.to(dtype).div_(255)
    return moved.to(dtype)


def _to_host(out: torch.Tensor) -> np.ndarray:
    if out.device.type == "cuda":
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        host.copy_(out, non_blocking=True)
        torch.cuda.current_stream(out.device).synchronize()
        return host.numpy()
    if out.device.type != "cpu":
        return out.cpu().numpy()
    return out.numpy()


def run_tiles_retrying(
    model: Model, image: torch.Tensor, *, tile: int, tile_batch: int = 1, **kwargs
) -> np.ndarray:
    """`run_tiles`, halving the tile batch, then the tile, after each CUDA out-of-memory error."""
    while True:
        try:
            return run_tiles(model, image, tile=tile, tile_batch=tile_batch, **kwargs)
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if tile_batch > 1:
                tile_batch //= 2
                log.warning("CUDA out of memory; retrying with %d tiles per forward", tile_batch)
                continue
            current = tile if tile > 0 else max(image.shape[-2:])
            tile = current // 2
            if tile < MIN_TILE:
                raise
            log.warning("CUDA out of memory with tile %d; retrying with tile %d", current, tile)
