"""Bounds on one request's work, checked before the work starts (the gateway checks them too).

- `tile_size`: 0 (the whole image) or at least TILE_FLOOR (common/limits.py, shared with the
  gateway). Smaller tiles cost far more than they save: each tile carries a fixed overlap and a
  network call, and a 128 px image in 8 px tiles took minutes (1 px: hours).
- `MAX_FACES`: faces restored per image, the largest first (a crowd photo holds hundreds).
- `MAX_RENDER_FACTOR` (common/limits.py, shared with the gateway): DDColor's input side is
  16 x render_factor and its memory grows with the square of that (bench/colorize_memory.py);
  the default fits the chart's colorize memory request.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from common import env
from common.limits import MIN_TILE_SIZE

TILE_FLOOR = MIN_TILE_SIZE  # the gateway's floor: one number on both sides
DEFAULT_MAX_FACES = 16


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """A whole number >= minimum from the environment (common/env.py); a malformed one stops the
    predictor with one line."""
    try:
        return env.env_int(os.environ, name, default, minimum=minimum)
    except ValueError as exc:
        raise SystemExit(f"predictor: {exc}") from None


def tile_size_check(value: int) -> str | None:
    if 0 < value < TILE_FLOOR:
        return (
            f"must be 0 (the whole image) or at least {TILE_FLOOR}: smaller tiles multiply "
            "the work (each tile adds its overlap and a network call) and save no memory"
        )
    return None


def at_most(limit: int, setting: str, why: str) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        if value > limit:
            return f"must be at most {limit} on this server ({setting}): {why}"
        return None

    return check
