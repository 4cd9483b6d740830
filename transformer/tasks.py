"""What each route does to a decoded RGB array, predictors included; /pipeline chains them."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from starlette.concurrency import run_in_threadpool

from . import colour, images
from .predictors import Predictors

logger = logging.getLogger("transformer.tasks")

FACE_SIZE = 512  # CodeFormer's face crop: the answer's side for an aligned input
UPSCALE_MODEL_MAX = 4  # Real-ESRGAN's largest native scale: the pipeline never asks for more
MODEL_STEPS = ("colorize", "restore", "upscale", "face-restore")  # pipeline steps = tasks


@dataclass
class Result:
    rgb: np.ndarray
    predictor_seconds: float = 0.0
    steps: list[str] = field(default_factory=list)
    faces: int | None = None
    faces_found: int | None = None  # above MAX_FACES only the largest are restored


def _named(p: Predictors, task: str, step: str, model: str | None) -> str:
    """X-Steps' entry: the step, with the model named when it is not the task's default."""
    if model is None or model == p.settings.variants[task]:
        return step
    return f"{step} ({model})"


async def colorize(
    p: Predictors, rgb: np.ndarray, render_factor: int, out: Result, model: str | None = None
) -> np.ndarray:
    answer = await p.infer("colorize", rgb, {"render_factor": render_factor}, model)
    out.predictor_seconds += answer.seconds
    out.steps.append(_named(p, "colorize", "colorize", model))
    return answer.image


async def restore(
    p: Predictors, rgb: np.ndarray, tile_size: int, out: Result, model: str | None = None
) -> np.ndarray:
    answer = await p.infer("restore", rgb, {"tile_size": tile_size}, model)
    out.predictor_seconds += answer.seconds
    out.steps.append(_named(p, "restore", "restore", model))
    return answer.image


async def face_restore(
    p: Predictors,
    rgb: np.ndarray,
    out: Result,
    *,
    fidelity: float,
    upscale: int,
    only_center_face: bool = False,
    has_aligned: bool = False,
    model: str | None = None,
) -> np.ndarray:
    answer = await p.infer(
        "face-restore",
        rgb,
        {
            "fidelity": float(fidelity),
            "upscale": upscale,
            "only_center_face": only_center_face,
            "has_aligned": has_aligned,
        },
        model,
    )
    out.predictor_seconds += answer.seconds
    out.steps.append(_named(p, "face-restore", "face-restore", model))
    faces = answer.parameters.get("faces")
    if faces is not None:
        out.faces = int(faces)
    found = answer.parameters.get("faces_found")
    if found is not None:
        out.faces_found = int(found)
    return answer.image


def predictor_scale(height: int, width: int, scale: int, max_message: int) -> int:
    """The scale to ask the predictor for so that its answer fits in one gRPC message."""
    budget = max_message - 1024 * 1024  # room for the message's own fields
    ask = scale
    while ask > 1 and height * ask * width * ask * 3 > budget:
        ask -= 1
    return ask


async def upscale(
    p: Predictors,
    rgb: np.ndarray,
    scale: int,
    tile_size: int,
    out: Result,
    model: str | None = None,
) -> np.ndarray:
    """Exactly `scale` x the input: the predictor's answer, resized here only when it was too
    large for one gRPC message (a 2048 px image at x8) or the predictor answered another size."""
    height, width = rgb.shape[:2]
    ask = predictor_scale(height, width, scale, p.settings.grpc_max_message)
    answer = await p.infer("upscale", rgb, {"scale": ask, "tile_size": tile_size}, model)
    out.predictor_seconds += answer.seconds
    out.steps.append(_named(p, "upscale", f"upscale x{scale}", model))
    result = answer.image
    if result.shape[:2] != (height * scale, width * scale):
        result = await run_in_threadpool(images.resize, result, width * scale, height * scale)
    return result


AUTO = "auto"
# X-Steps' entry when colorize=auto leaves a photo's own colours alone.
SKIPPED_COLOUR_PHOTO = "colorize skipped (colour photo)"


@dataclass
class PipelineOptions:
    colorize: bool | Literal["auto"]  # auto: only a photo without colour of its own (colour.py)
    restore: bool
    upscale: bool
    face_restore: bool
    width: int
    height: int
    render_factor: int
    restore_tile_size: int
    fidelity: float
    upscale_tile_size: int
    only_center_face: bool = False
    # the model of each step (None: the task's default)
    colorize_model: str | None = None
    restore_model: str | None = None
    upscale_model: str | None = None
    face_restore_model: str | None = None

    def models(self) -> dict[str, str | None]:
        return {
            "colorize": self.colorize_model,
            "restore": self.restore_model,
            "upscale": self.upscale_model,
            "face-restore": self.face_restore_model,
        }


@dataclass
class Step:
    name: str  # colorize, restore, upscale, resize, face-restore
    size_in: tuple[int, int]  # (width, height)
    size_out: tuple[int, int]
    factor: int = 1  # upscale only


def plan_pipeline(width: int, height: int, o: PipelineOptions) -> list[Step]:
    """The steps /pipeline will take on a width x height image, with every image size known
    before the first step (the bounds are checked on this plan). The original service's order:
    colorize, restore, upscale when the image is smaller than the target box, resize into the
    box (aspect ratio kept), face-restore last. colorize=auto plans the colorize step (the
    bounds hold whether it runs or not); pipeline() decides it on the photo."""
    steps = []
    size = (width, height)
    for name, wanted in (("colorize", bool(o.colorize)), ("restore", o.restore)):
        if wanted:
            steps.append(Step(name, size, size))
    room = min(o.width / size[0], o.height / size[1])
    if o.upscale and room > 1:
        factor = min(UPSCALE_MODEL_MAX, math.ceil(room))
        upscaled = (size[0] * factor, size[1] * factor)
        steps.append(Step("upscale", size, upscaled, factor))
        size = upscaled
    box = images.fit_into_box(*size, o.width, o.height)
    if box != size:
        steps.append(Step("resize", size, box))
        size = box
    if o.face_restore:
        steps.append(Step("face-restore", size, size))
    return steps


async def decide_colorize(o: PipelineOptions, rgb: np.ndarray, out: Result) -> PipelineOptions:
    """colorize=auto: on for a photo without colour of its own (grayscale or one tint), off for a
    colour photo, which keeps its colours (X-Steps says so)."""
    if o.colorize != AUTO:
        return o
    spread = await run_in_threadpool(colour.colour_spread, rgb)
    colourful = spread >= colour.THRESHOLD
    logger.debug("colorize=auto: colour spread %.2f (threshold %g)", spread, colour.THRESHOLD)
    if colourful:
        out.steps.append(SKIPPED_COLOUR_PHOTO)
    return dataclasses.replace(o, colorize=not colourful)


async def pipeline(p: Predictors, rgb: np.ndarray, o: PipelineOptions) -> Result:
    """Runs the plan_pipeline steps, each on the previous step's answer."""
    out = Result(rgb)
    o = await decide_colorize(o, rgb, out)
    steps = plan_pipeline(rgb.shape[1], rgb.shape[0], o)
    models = o.models()
    for step in steps:  # a step this server does not offer: 503 before any work is done
        if step.name in MODEL_STEPS:
            p.replicas(step.name, models[step.name])
    for step in steps:
        if step.name == "colorize":
            rgb = await colorize(p, rgb, o.render_factor, out, o.colorize_model)
        elif step.name == "restore":
            rgb = await restore(p, rgb, o.restore_tile_size, out, o.restore_model)
        elif step.name == "upscale":
            rgb = await upscale(p, rgb, step.factor, o.upscale_tile_size, out, o.upscale_model)
        elif step.name == "resize":
            box = images.fit_into_box(rgb.shape[1], rgb.shape[0], o.width, o.height)
            if box != (rgb.shape[1], rgb.shape[0]):
                rgb = await run_in_threadpool(images.resize, rgb, *box)
                out.steps.append(f"resize {box[0]}x{box[1]}")
        else:
            rgb = await face_restore(
                p,
                rgb,
                out,
                fidelity=o.fidelity,
                upscale=1,
                only_center_face=o.only_center_face,
                model=o.face_restore_model,
            )
    out.rgb = rgb
    return out
