"""Test-time Local Converter (TLC) for NAFNet, as the authors run their deblur models.

NAFNet blocks pool globally (simplified channel attention). The network was trained on 256 px
crops, so on a large image the global mean describes far more than training ever showed it. The
authors' NAFNetLocal replaces that pooling at test time by a mean over a local window that is 1.5x
the feature map a 256 px crop produces at that level (384 px at full resolution). spandrel has only
the plain network; this module swaps the pooling layers of a loaded spandrel NAFNet in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TRAIN_SIZE = 256
BASE_RATIO = 1.5


class LocalMeanPool(nn.Module):
    """Mean over a `window` around each pixel; the global mean when the window covers the map."""

    def __init__(self, window: int):
        super().__init__()
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.window >= h and self.window >= w:
            return F.adaptive_avg_pool2d(x, 1)
        kh, kw = min(h, self.window), min(w, self.window)
        # Box sums from an integral image, in float64 so large maps keep their precision.
        integral = F.pad(x.double().cumsum(-1).cumsum(-2), (1, 0, 1, 0))
        sums = (
            integral[..., kh:, kw:]
            - integral[..., :-kh, kw:]
            - integral[..., kh:, :-kw]
            + integral[..., :-kh, :-kw]
        )
        mean = (sums / (kh * kw)).to(x.dtype)
        # Centre the valid windows over the map; the borders repeat the nearest full window.
        dh, dw = h - mean.shape[-2], w - mean.shape[-1]
        return F.pad(mean, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="replicate")


def _swap_pooling(blocks: nn.Module, stride: int) -> None:
    window = int(TRAIN_SIZE * BASE_RATIO) // stride
    for block in blocks.modules():
        sca = getattr(block, "sca", None)
        if isinstance(sca, nn.Sequential) and isinstance(sca[0], nn.AdaptiveAvgPool2d):
            sca[0] = LocalMeanPool(window)


def apply_tlc(nafnet: nn.Module) -> nn.Module:
    """Give every NAFBlock of a spandrel NAFNet the local pooling of its resolution level."""
    levels = len(nafnet.encoders)
    for level, encoder in enumerate(nafnet.encoders):
        _swap_pooling(encoder, 2**level)
    _swap_pooling(nafnet.middle_blks, 2**levels)
    for i, decoder in enumerate(nafnet.decoders):
        _swap_pooling(decoder, 2 ** (levels - 1 - i))
    return nafnet
