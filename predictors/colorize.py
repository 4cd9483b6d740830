"""DDColor with the authors' Lab pipeline.

The network sees a grey RGB image at 16 x render_factor px (odd factors round up to a multiple of
32 px, as the encoder needs) and predicts the ab channels; the full-resolution L of the input is
kept, the ab prediction is resized back (bilinear) and clipped to the Lab range (unclipped values
give colour blotches). Never tiled: DDColor colours from the whole scene.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from archs import ddcolor_input_side
from common.limits import DEFAULT_MAX_RENDER_FACTOR

from .base import EnhanceModel
from .limits import at_most
from .v2codec import Param

AB_RANGE = (-128.0, 127.0)


class ColorizeModel(EnhanceModel):
    task = "colorize"
    params = {"render_factor": Param(int, 32, 1, 100)}

    def __init__(self, *args, max_render_factor: int = DEFAULT_MAX_RENDER_FACTOR, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_render_factor = max_render_factor
        why = "DDColor's memory grows with the square of render_factor"
        check = at_most(max_render_factor, "MAX_RENDER_FACTOR", why)
        self.params = {"render_factor": Param(int, 32, 1, 100, check=check)}

    def enhance(self, rgb: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
        height, width = rgb.shape[:2]
        side = ddcolor_input_side(params["render_factor"])
        # Single-channel views of the interleaved pixels: OpenCV scales and rounds each in one pass.
        image = cv2.multiply(rgb.reshape(height, -1), 1 / 255.0, dtype=cv2.CV_32F)
        image = image.reshape(height, width, 3)
        small_l = cv2.cvtColor(cv2.resize(image, (side, side)), cv2.COLOR_RGB2Lab)[:, :, :1]
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab, dst=image)  # its L is kept, its ab replaced
        grey_lab = np.concatenate([small_l, np.zeros_like(small_l), np.zeros_like(small_l)], -1)
        grey_rgb = cv2.cvtColor(grey_lab, cv2.COLOR_Lab2RGB)
        tensor = torch.from_numpy(grey_rgb).permute(2, 0, 1)[None].to(self.device)
        with self.half_precision():
            ab = self.net(tensor).float()
        ab = F.interpolate(ab, size=(height, width), mode="bilinear", align_corners=False)
        lab[:, :, 1:] = ab[0].clamp_(*AB_RANGE).permute(1, 2, 0).cpu().numpy()
        out = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB, dst=lab)
        return cv2.multiply(out.reshape(height, -1), 255.0, dtype=cv2.CV_8U).reshape(rgb.shape), {}
