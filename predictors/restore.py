"""NAFNet denoise (SIDD) or deblur (GoPro, with TLC); padding to 16 happens inside the network."""

from __future__ import annotations

import numpy as np

from . import cancel, progress
from .base import EnhanceModel
from .limits import tile_size_check
from .tiling import run_tiles_retrying
from .v2codec import Param

TILE_OVERLAP = 32


class RestoreModel(EnhanceModel):
    task = "restore"
    params = {"tile_size": Param(int, 0, 0, check=tile_size_check)}

    def enhance(self, rgb: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
        result = run_tiles_retrying(
            self.run_net,
            self.to_tensor(rgb),
            scale=1,
            tile=params["tile_size"],
            overlap=TILE_OVERLAP,
            **self.tiling,
            should_stop=cancel.should_stop,
            on_progress=progress.tiles,
        )
        return result, {}
