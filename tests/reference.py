"""What spandrel itself answers for a checkpoint, run in process: the predictors must match it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from spandrel import ModelLoader

from archs.nafnet_tlc import apply_tlc


def spandrel_reference(path: Path, image: np.ndarray, tlc: bool = False) -> np.ndarray:
    model = ModelLoader().load_from_file(path).eval()
    if tlc:
        apply_tlc(model.model)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        out = model(tensor)
    return out[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
