"""Real-ESRGAN: the network's native scale, then a Lanczos resize to exactly `scale` x."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import cancel
from .base import EnhanceModel
from .limits import tile_size_check
from .tiling import run_tiles_retrying
from .v2codec import Param

TILE_OVERLAP = 32


class UpscaleModel(EnhanceModel):
    task = "upscale"
    params = {"scale": Param(int, 4, 1, 8), "tile_size": Param(int, 512, 0, check=tile_size_check)}
    cuda_dtype = torch.float16  # the authors' default on GPU

    def enhance(self, rgb: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
        height, width = rgb.shape[:2]
        native = self.loaded.descriptor.scale
        # x2 and x1 models pixel-unshuffle their input: sides and tile origins must be multiples.
        align = {2: 2, 1: 4}.get(native, 1)
        image = self.to_tensor(rgb)
        pad_h, pad_w = -height % align, -width % align
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
        out = run_tiles_retrying(
            self.loaded.descriptor,
            image,
            scale=native,
            tile=params["tile_size"],
            overlap=TILE_OVERLAP,
            device=self.device,
            dtype=self.dtype,
            should_stop=cancel.should_stop,
            align=align,
        )
        result = self.to_image(out[:, :, : height * native, : width * native])
        scale = params["scale"]
        if scale != native:
            target = (width * scale, height * scale)
            result = cv2.resize(result, target, interpolation=cv2.INTER_LANCZOS4)
        return result, {}
