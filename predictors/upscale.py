"""Any super-resolution model (Real-ESRGAN by default): the network's native scale, padded and
tiled as its architecture asks (fitting.py), then a Lanczos resize to exactly `scale` x."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .base import EnhanceModel
from .fitting import run_fitted
from .limits import tile_size_check
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
        descriptor = self.loaded.descriptor
        native = descriptor.scale
        # Real-ESRGAN x2 and x1 see their input pixel-unshuffled: their context (in input px)
        # is 2x and 4x wider.
        context = {2: 2, 1: 4}.get(native, 1) if self.loaded.detected.family == "ESRGAN" else 1
        result = run_fitted(
            self.run_net,
            descriptor,
            rgb,
            tile=params["tile_size"],
            overlap=TILE_OVERLAP * context,
            feather=TILE_FEATHER * context,
            **self.tiling,
        )
        scale = params["scale"]
        if scale != native:
            target = (width * scale, height * scale)
            return cv2.resize(result, target, interpolation=cv2.INTER_LANCZOS4), {}
        return np.ascontiguousarray(result), {}
