"""What each image route does, as a value: its parameters, the checks made before any work, the
predictor work itself, and the answer's encoding and headers.

A synchronous request (routes.py) and a job (jobs/runner.py) run the very same operation: the
route builds it from its validated query parameters; a job stores `params()` and rebuilds it
with `from_params` when it runs, also after a gateway restart.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from starlette.concurrency import run_in_threadpool

from . import bounds, colour, images, tasks
from .config import Settings
from .errors import GatewayError
from .predictors import Predictors


def check_model(settings: Settings, task: str, model: str | None, error=None) -> None:
    """422 for a model the task does not serve, naming the ones it does (`error`: the
    exception to raise with the message instead, e.g. ValueError in a pydantic validator)."""
    served = settings.models_of(task)
    if model is not None and model not in served:
        message = (
            f"{task} has no model {model!r} on this server; it serves {', '.join(served)} "
            f"(default {settings.variants[task]})"
        )
        raise error(message) if error else GatewayError(422, message)


class Operation(Protocol):
    route: ClassVar[str]  # colorize, restore, face-restore, upscale, pipeline
    output_format: str

    def check(self, settings: Settings, rgb: np.ndarray) -> None:
        """Refuse (GatewayError 4xx) before any work: sizes, messages, containers."""

    def steps(self, rgb: np.ndarray) -> list[str]:
        """The predictor tasks this operation calls on `rgb`, in order (progress shares)."""

    async def run(self, p: Predictors, rgb: np.ndarray) -> tasks.Result: ...

    def params(self) -> dict[str, Any]: ...


class _Params:
    def params(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any]):
        return cls(**params)


@dataclass
class Colorize(_Params):
    route: ClassVar[str] = "colorize"
    render_factor: int
    output_format: str = "png"
    model: str | None = None

    def check(self, settings: Settings, rgb: np.ndarray) -> None:
        check_model(settings, "colorize", self.model)
        images.check_output_size(self.output_format, rgb.shape[1], rgb.shape[0])
        bounds.check_answer(settings, rgb.shape[1], rgb.shape[0])
        bounds.check_message(settings, "colorize", rgb.shape[1], rgb.shape[0])

    def steps(self, rgb: np.ndarray) -> list[str]:
        return ["colorize"]

    async def run(self, p: Predictors, rgb: np.ndarray) -> tasks.Result:
        out = tasks.Result(rgb)
        out.rgb = await tasks.colorize(p, rgb, self.render_factor, out, self.model)
        return out


@dataclass
class Restore(_Params):
    route: ClassVar[str] = "restore"
    tile_size: int
    output_format: str = "png"
    model: str | None = None

    def check(self, settings: Settings, rgb: np.ndarray) -> None:
        check_model(settings, "restore", self.model)
        images.check_output_size(self.output_format, rgb.shape[1], rgb.shape[0])
        bounds.check_answer(settings, rgb.shape[1], rgb.shape[0])
        bounds.check_message(settings, "restore", rgb.shape[1], rgb.shape[0])

    def steps(self, rgb: np.ndarray) -> list[str]:
        return ["restore"]

    async def run(self, p: Predictors, rgb: np.ndarray) -> tasks.Result:
        out = tasks.Result(rgb)
        out.rgb = await tasks.restore(p, rgb, self.tile_size, out, self.model)
        return out


@dataclass
class FaceRestore(_Params):
    route: ClassVar[str] = "face-restore"
    fidelity: float
    upscale: int
    only_center_face: bool = False
    has_aligned: bool = False
    output_format: str = "png"
    model: str | None = None

    def check(self, settings: Settings, rgb: np.ndarray) -> None:
        check_model(settings, "face-restore", self.model)
        # An aligned crop is restored at the model's 512 px face size, then scaled by `upscale`.
        side = tasks.FACE_SIZE if self.has_aligned else None
        width, height = (side, side) if side else (rgb.shape[1], rgb.shape[0])
        scale = self.upscale
        images.check_output_size(self.output_format, width * scale, height * scale)
        bounds.check_answer(settings, width * scale, height * scale)
        bounds.check_message(settings, "face-restore", rgb.shape[1], rgb.shape[0])
        bounds.check_message(settings, "face-restore", width * scale, height * scale)

    def steps(self, rgb: np.ndarray) -> list[str]:
        return ["face-restore"]

    async def run(self, p: Predictors, rgb: np.ndarray) -> tasks.Result:
        out = tasks.Result(rgb)
        out.rgb = await tasks.face_restore(
            p,
            rgb,
            out,
            fidelity=self.fidelity,
            upscale=self.upscale,
            only_center_face=self.only_center_face,
            has_aligned=self.has_aligned,
            model=self.model,
        )
        return out


@dataclass
class Upscale(_Params):
    route: ClassVar[str] = "upscale"
    scale: int
    tile_size: int
    output_format: str = "png"
    model: str | None = None

    def check(self, settings: Settings, rgb: np.ndarray) -> None:
        check_model(settings, "upscale", self.model)
        width, height = rgb.shape[1] * self.scale, rgb.shape[0] * self.scale
        images.check_output_size(self.output_format, width, height)
        bounds.check_answer(settings, width, height)
        bounds.check_message(settings, "upscale", rgb.shape[1], rgb.shape[0])

    def steps(self, rgb: np.ndarray) -> list[str]:
        return ["upscale"]

    async def run(self, p: Predictors, rgb: np.ndarray) -> tasks.Result:
        out = tasks.Result(rgb)
        out.rgb = await tasks.upscale(p, rgb, self.scale, self.tile_size, out, self.model)
        return out


@dataclass
class Pipeline(_Params):
    route: ClassVar[str] = "pipeline"
    options: tasks.PipelineOptions
    output_format: str = "png"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Pipeline:
        return cls(tasks.PipelineOptions(**params["options"]), params["output_format"])

    def _plan(self, rgb: np.ndarray) -> list[tasks.Step]:
        return tasks.plan_pipeline(rgb.shape[1], rgb.shape[0], self.options)

    def check(self, settings: Settings, rgb: np.ndarray) -> None:
        for task, model in self.options.models().items():
            check_model(settings, task, model)
        images.check_output_size(self.output_format, self.options.width, self.options.height)
        bounds.check_plan(settings, (rgb.shape[1], rgb.shape[0]), self._plan(rgb))

    def steps(self, rgb: np.ndarray) -> list[str]:
        """The predictor steps that will run: colorize=auto decided on the photo (~10 ms), so
        that a job's progress counts only the steps it takes."""
        names = [step.name for step in self._plan(rgb) if step.name != "resize"]
        if self.options.colorize == tasks.AUTO and colour.has_own_colour(rgb):
            names.remove("colorize")
        return names

    async def run(self, p: Predictors, rgb: np.ndarray) -> tasks.Result:
        return await tasks.pipeline(p, rgb, self.options)


def check_models(settings: Settings, op: Operation) -> None:
    """422 for a model its task does not serve, before any upload is read."""
    if isinstance(op, Pipeline):
        for task, model in op.options.models().items():
            check_model(settings, task, model)
    else:
        check_model(settings, op.route, getattr(op, "model", None))


OPERATIONS: dict[str, type] = {
    op.route: op for op in (Colorize, Restore, FaceRestore, Upscale, Pipeline)
}


def from_params(route: str, params: dict[str, Any]) -> Operation:
    """The operation a job stored with `params()`."""
    return OPERATIONS[route].from_params(params)


async def decode(settings: Settings, op: Operation, data: bytes) -> images.Decoded:
    """The upload decoded and checked against the operation's bounds (400/413/415 before any
    work)."""
    decoded = await run_in_threadpool(
        images.decode, data, settings.max_pixels, settings.max_image_side
    )
    op.check(settings, decoded.rgb)
    return decoded


@dataclass
class Answer:
    body: bytes
    media_type: str
    headers: dict[str, str]


async def encode(
    op: Operation, decoded: images.Decoded, result: tasks.Result, started: float
) -> Answer:
    """The encoded answer with the route's headers; `started` is time.perf_counter() when the
    work began (Server-Timing's total)."""
    body, media_type = await run_in_threadpool(
        images.encode, result.rgb, decoded.alpha, op.output_format, decoded.icc_profile
    )
    total_ms = (time.perf_counter() - started) * 1000
    headers = {
        "Server-Timing": f"predictor;dur={result.predictor_seconds * 1000:.1f}, "
        f"total;dur={total_ms:.1f}",
        "X-Steps": ",".join(result.steps),
    }
    if result.faces is not None:
        headers["X-Faces"] = str(result.faces)
    if result.faces_found is not None:
        headers["X-Faces-Found"] = str(result.faces_found)
    return Answer(body, media_type, headers)
