"""Bounds on a request's work, checked before any of it starts (CONTRACT 1, "Work is bounded").

- tile sizes: 0 (whole image) or at least common.limits.MIN_TILE_SIZE (422 from validation);
- the answer's pixels: at most MAX_OUTPUT_PIXELS (413);
- each gRPC message to or from a predictor: under GRPC_MAX_MESSAGE_BYTES (413), computed from the
  image shapes, so a request that cannot travel is refused instead of failing halfway with a 500.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import AfterValidator

from common.limits import MIN_TILE_SIZE

from .config import Settings
from .errors import too_large

# Room in a gRPC message for its fields besides the image bytes (names, shapes, parameters).
MESSAGE_OVERHEAD = 1024 * 1024


def _tile_size(value: int) -> int:
    if 0 < value < MIN_TILE_SIZE:
        raise ValueError(
            f"must be 0 (the whole image) or at least {MIN_TILE_SIZE} px: smaller tiles cost "
            "more in overlap and per-tile work than they save in memory"
        )
    return value


TileSize = Annotated[
    int,
    Query(
        ge=0,
        description=f"Tile side in px: 0 = whole image at once, else at least {MIN_TILE_SIZE}.",
        json_schema_extra={"anyOf": [{"const": 0}, {"minimum": MIN_TILE_SIZE}]},
    ),
    AfterValidator(_tile_size),
]


def check_answer(settings: Settings, width: int, height: int) -> None:
    """413 when the answer would have more pixels than MAX_OUTPUT_PIXELS."""
    if width * height > settings.max_output_pixels:
        raise too_large(
            f"the result would be {width}x{height} = {width * height:,} pixels, over the limit "
            f"of {settings.max_output_pixels:,} (MAX_OUTPUT_PIXELS); ask for a smaller scale or "
            "box, or send a smaller image"
        )


def image_bytes(width: int, height: int) -> int:
    return width * height * 3  # UINT8 RGB


def fits_message(settings: Settings, width: int, height: int) -> bool:
    return image_bytes(width, height) + MESSAGE_OVERHEAD <= settings.grpc_max_message


def check_message(settings: Settings, task: str, width: int, height: int) -> None:
    """413 when a width x height image cannot travel to or from the task's predictor."""
    if not fits_message(settings, width, height):
        limit = settings.grpc_max_message
        raise too_large(
            f"the {task} step would exchange a {width}x{height} image "
            f"({image_bytes(width, height) / 2**20:.0f} MiB), over the gateway's "
            f"{limit / 2**20:.0f} MiB message limit to the predictors (GRPC_MAX_MESSAGE_BYTES); "
            "ask for a smaller result"
        )


def check_plan(settings: Settings, size: tuple[int, int], steps) -> None:
    """The whole /pipeline up front (steps from tasks.plan_pipeline): its answer and every
    model step's messages. The upscale step's answer may be sent at a lower scale and resized
    here (tasks.predictor_scale), so only its input must fit."""
    check_answer(settings, *(steps[-1].size_out if steps else size))
    for step in steps:
        if step.name == "resize":
            continue
        check_message(settings, step.name, *step.size_in)
        if step.name != "upscale":
            check_message(settings, step.name, *step.size_out)
