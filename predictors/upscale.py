"""Real-ESRGAN: the network's native scale, then a Lanczos resize to exactly `scale` x."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from . import cancel, progress
from .base import EnhanceModel
from .limits import tile_size_check
from .tiling import run_tiles_retrying
from .v2codec import Param

# Measured with the trained x4plus (bench/tiling_fidelity.py, README "Tiling fidelity"): a pixel
# needs about 64 px of real context on each side to come within 2 grey levels of the whole
# image, so tiles overlap by 2 x 64 + the 16 px cross-fade. x2 and x1 models see their input
# pixel-unshuffled, so their context (in input px) is 2x and 4x wider (capped at tile / 2).
TILE_OVERLAP = 144
TILE_FEATHER = 16


class UpscaleModel(EnhanceModel):
    task = "upscale"
    params = {"scale": Param(int, 4, 1, 8), "tile_size": Param(int, 512, 0, check=tile_size_check)}
    half_dtype = torch.float16  # the authors' default on GPU; spandrel marks ESRGAN fp16-safe
    channels_last = True  # convolutions only: the layout tensor cores prefer

    def answer_size(self, height: int, width: int, params: dict) -> tuple[int, int]:
        return height * params["scale"], width * params["scale"]

    def enhance(self, rgb: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
        height, width = rgb.shape[:2]
        native = self.loaded.descriptor.scale
        # x2 and x1 models pixel-unshuffle their input: sides and tile origins must be multiples.
        align = {2: 2, 1: 4}.get(native, 1)
        pad_h, pad_w = -height % align, -width % align
        if pad_h or pad_w:
            rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        result = run_tiles_retrying(
            self.run_net,
            self.to_tensor(rgb),
            scale=native,
            tile=params["tile_size"],
            overlap=TILE_OVERLAP * align,
            feather=TILE_FEATHER * align,
            should_stop=cancel.should_stop,
            on_progress=progress.tiles,
            align=align,
            **self.tiling,
        )
        result = result[: height * native, : width * native]
        scale = params["scale"]
        if scale != native:
            target = (width * scale, height * scale)
            return cv2.resize(result, target, interpolation=cv2.INTER_LANCZOS4), {}
        return np.ascontiguousarray(result), {}
