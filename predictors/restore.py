"""Any restoration model at scale 1: NAFNet denoise (SIDD) or deblur (GoPro, with TLC) by default,
or SCUNet, 1x ESRGAN/SPAN/Compact...; padded and tiled as its architecture asks (fitting.py)."""

from __future__ import annotations

import numpy as np

from .base import EnhanceModel
from .fitting import run_fitted
from .limits import tile_size_check
from .v2codec import Param

TILE_OVERLAP = 32


class RestoreModel(EnhanceModel):
    task = "restore"
    params = {"tile_size": Param(int, 0, 0, check=tile_size_check)}

    def enhance(self, rgb: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
        result = run_fitted(
            self.run_net,
            self.loaded.descriptor,
            rgb,
            tile=params["tile_size"],
            overlap=TILE_OVERLAP,
            **self.tiling,
        )
        return np.ascontiguousarray(result), {}
