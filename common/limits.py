"""Request bounds that the gateway and the predictors both enforce (the same numbers on both
sides, so that a request the gateway lets through is never refused by the predictor)."""

from __future__ import annotations

from collections.abc import Mapping

from .env import env_int

# Tiles overlap by 32 px (restore) to 144 px (upscale): each predictor's TILE_OVERLAP. Below
# 4x the overlap a tile's useful centre shrinks fast: at 128 px each pixel of a restore is
# computed about 1.8x, at 64 px 4x, at 8 px the model runs thousands of times on a small photo.
# 0 still means "the whole image at once".
MIN_TILE_SIZE = 128

# DDColor's input side is 16 x render_factor px and its memory grows with the square of it.
# MAX_RENDER_FACTOR (environment) lowers or raises this default.
DEFAULT_MAX_RENDER_FACTOR = 64
RENDER_FACTOR_RANGE = (1, 100)  # the contract's range; the maximum in force is at most 100

# The answer's pixels (MAX_OUTPUT_PIXELS): a 4x upscale of the gateway's largest input
# (MAX_IMAGE_SIDE 2048) is 8192 x 8192. The gateway refuses a larger answer (413); a predictor
# refuses an image whose answer, or which itself, is larger (400 / INVALID_ARGUMENT), and a
# batch whose answers hold more than MAX_BATCH_PIXELS in all (default: the same number, so one
# request never costs more than the largest single image the gateway sends).
DEFAULT_MAX_OUTPUT_PIXELS = 8192 * 8192


def max_render_factor(env: Mapping[str, str]) -> int:
    """MAX_RENDER_FACTOR from the environment (1..100), else the default."""
    low, high = RENDER_FACTOR_RANGE
    return env_int(env, "MAX_RENDER_FACTOR", DEFAULT_MAX_RENDER_FACTOR, minimum=low, maximum=high)


# A predictor at its own in-flight cap (MAX_INFLIGHT, predictors/v2grpc.py) answers
# RESOURCE_EXHAUSTED with details starting so; the gateway then tries another replica.
BUSY_DETAIL = "busy:"


def max_output_pixels(env: Mapping[str, str]) -> int:
    """MAX_OUTPUT_PIXELS from the environment, else the default."""
    return env_int(env, "MAX_OUTPUT_PIXELS", DEFAULT_MAX_OUTPUT_PIXELS, minimum=1)


def max_batch_pixels(env: Mapping[str, str]) -> int:
    """MAX_BATCH_PIXELS from the environment, else MAX_OUTPUT_PIXELS."""
    return env_int(env, "MAX_BATCH_PIXELS", max_output_pixels(env), minimum=1)
