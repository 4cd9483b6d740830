"""Request bounds that the gateway and the predictors both enforce (the same numbers on both
sides, so that a request the gateway lets through is never refused by the predictor)."""

from __future__ import annotations

# Tiles overlap by 32 px (restore) to 144 px (upscale): each predictor's TILE_OVERLAP. Below
# 4x the overlap a tile's useful centre shrinks fast: at 128 px each pixel of a restore is
# computed about 1.8x, at 64 px 4x, at 8 px the model runs thousands of times on a small photo.
# 0 still means "the whole image at once".
MIN_TILE_SIZE = 128

# DDColor's input side is 16 x render_factor px and its memory grows with the square of it.
# MAX_RENDER_FACTOR (environment) lowers or raises this default.
DEFAULT_MAX_RENDER_FACTOR = 64
RENDER_FACTOR_RANGE = (1, 100)  # the contract's range; the maximum in force is at most 100


def max_render_factor(env: dict[str, str]) -> int:
    """MAX_RENDER_FACTOR from the environment (1..100), else the default."""
    raw = env.get("MAX_RENDER_FACTOR", "").strip()
    if not raw:
        return DEFAULT_MAX_RENDER_FACTOR
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"MAX_RENDER_FACTOR must be a whole number, got {raw!r}") from None
    low, high = RENDER_FACTOR_RANGE
    if not low <= value <= high:
        raise ValueError(f"MAX_RENDER_FACTOR must be within {low}..{high}, got {value}")
    return value


# A predictor at its own in-flight cap (MAX_INFLIGHT, predictors/v2grpc.py) answers
# RESOURCE_EXHAUSTED with details starting so; the gateway then tries another replica.
BUSY_DETAIL = "busy:"
