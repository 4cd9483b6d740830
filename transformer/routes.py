"""The REST routes (CONTRACT section 1), added to the FastAPI app that KServe serves.

Every route exists bare and under /v1. Query parameters are validated by FastAPI (422 on a
value out of range, and on a name the route does not have: query.py); everything else answers
`{"detail": ...}` with the contract's status.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from kserve.model_server import app
from pydantic import AfterValidator, BeforeValidator

from . import arrivals, budget, docs, metrics, operations, query, surface, tasks
from .bounds import TileSize
from .config import TASKS, Settings, settings_at_start
from .errors import GatewayError
from .jobs import api as jobs_api
from .jobs import service as jobs_service
from .predictors import Predictors
from .uploads import Pace, read_upload

logger = logging.getLogger("transformer.routes")
# The status recorded (metrics) for a request whose client hung up: nginx's "client closed".
CLIENT_CLOSED = 499


class State:
    """The settings and predictor clients the routes use; __main__ sets them from flags."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.predictors = Predictors(settings)
        self.pace = Pace(settings.upload_idle_timeout_s, settings.upload_min_bytes_per_s)
        self.arrivals = arrivals.Arrivals()


state = State(settings_at_start())


def configure(settings: Settings) -> None:
    global state
    state = State(settings)


OutputFormat = Annotated[
    Literal["png", "jpg", "jpeg", "webp"],
    Query(description="Encoding of the answer: png (default, keeps alpha), jpg/jpeg, webp."),
]
DEFAULT_RENDER_FACTOR = min(32, state.settings.max_render_factor)
RenderFactor = Annotated[
    int,
    Query(
        ge=1,
        le=state.settings.max_render_factor,
        description="Model input side = 16 x render_factor px (32 = 512 px, the official "
        "setting); higher costs more memory and time.",
    ),
]


def _model_query(task: str, name: str = "model") -> object:
    """The `model` parameter of a task's route: the models this gateway serves are listed in
    /openapi.json (`enum`) and /health; another name is a 422 naming them (operations.py)."""
    served = list(state.settings.models_of(task))
    default = state.settings.variants[task]

    def served_here(model: str) -> str:
        """A model the task serves, else a 422 in FastAPI's validation shape naming them (at
        once: before the upload is read, and before a job is made)."""
        operations.check_model(state.settings, task, model, ValueError)
        return model

    return Annotated[
        str,
        AfterValidator(served_here),
        Query(
            alias=name,
            description=f"The {task} model (default {default}); this server serves "
            f"{', '.join(served)}. /health describes each.",
            json_schema_extra={"enum": served},
        ),
    ]


# Each model parameter's default is the task's default model (the page preselects it).
DEFAULT_MODEL = state.settings.variants
ColorizeModel = _model_query("colorize")
RestoreModel = _model_query("restore")
FaceModel = _model_query("face-restore")
UpscaleModel = _model_query("upscale")
StepColorizeModel = _model_query("colorize", "colorize_model")
StepRestoreModel = _model_query("restore", "restore_model")
StepUpscaleModel = _model_query("upscale", "upscale_model")
StepFaceModel = _model_query("face-restore", "face_restore_model")

_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image (JPEG, PNG, WebP, BMP or TIFF) as multipart field `file`, "
        "or as the raw body with Content-Type image/*.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_DETAIL = {"application/json": {"example": {"detail": "a message a person can act on"}}}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
_RESPONSES: dict[int | str, dict] = {
    200: {
        "description": "The processed image, encoded as `output_format`.",
        "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
    },
    400: {"description": "Undecodable or invalid image.", "content": _DETAIL},
    408: {"description": "The upload stopped or trickled (UPLOAD_*).", "content": _DETAIL},
    413: {
        "description": "Upload over MAX_UPLOAD_MB, too many pixels in (MAX_PIXELS) or out "
        "(MAX_OUTPUT_PIXELS), or a step too large for one message to a predictor.",
        "content": _DETAIL,
    },
    415: {"description": "Not a JPEG, PNG, WebP, BMP or TIFF image.", "content": _DETAIL},
    429: {
        "description": "The task's queue is full (MAX_QUEUE_PER_TASK).",
        "headers": _RETRY_AFTER,
        "content": _DETAIL,
    },
    500: {"description": "Unexpected; the details are in the gateway's log.", "content": _DETAIL},
    503: {
        "description": "The predictor is not ready or unreachable (with Retry-After), or this "
        "server does not offer the task (no Retry-After: waiting will not help).",
        "headers": _RETRY_AFTER,
        "content": _DETAIL,
    },
    504: {"description": "The request ran out of time (PREDICTOR_TIMEOUT_S).", "content": _DETAIL},
}

# A query parameter a route does not have is a 422 (query.py), on every route of the router.
router = APIRouter(dependencies=[Depends(query.no_unknown_parameters)])


def _image_route(path: str, summary: str):
    return router.post(
        path,
        summary=summary,
        response_class=Response,
        responses=_RESPONSES,
        openapi_extra=_IMAGE_BODY,
    )


async def _answer(request: Request, op: operations.Operation) -> Response:
    """Upload -> decode and check -> work (predictors) -> encode, with every failure mapped to
    JSON. The work is cancelled when the client hangs up; it must finish within the request's
    budget (budget.py)."""
    if jobs_api.wants_async(request):
        return await jobs_api.submit(request, op, state)
    route = op.route
    start = time.perf_counter()
    status = 500
    settings = state.settings
    request_budget = budget.Budget.starting_now(settings.predictor_timeout_s)
    budget.current.set(request_budget)
    try:
        if "webhook" in request.query_params:
            raise GatewayError(
                422,
                "webhook is for jobs only: send the header Prefer: respond-async with it "
                "(the job's JSON is POSTed to the webhook when it ends)",
            )
        operations.check_models(settings, op)  # 422 before the upload is read
        # A place in the queue before the body is read: 429 at once when there is none.
        with state.arrivals.place(state.predictors.admission, arrivals.first_queue(settings, op)):
            upload = read_upload(request, settings.max_upload_bytes, state.pace)
            data = await request_budget.bound(upload, "while its upload arrived")
            decoded = await operations.decode(settings, op, data)
            del data  # the upload's bytes are not kept while the predictors work
        request_budget.check("before its work started")
        result = await budget.unless_disconnected(request, op.run(state.predictors, decoded.rgb))
        answer = await operations.encode(op, decoded, result, start)
        status = 200
        return Response(answer.body, media_type=answer.media_type, headers=answer.headers)
    except GatewayError as exc:
        status = exc.status
        if status >= 500:
            logger.warning("%s: %d %s", route, status, exc.for_log())
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)
    except budget.ClientGone as exc:
        status = CLIENT_CLOSED
        logger.info("%s: the client hung up %s; the request was dropped", route, exc)
        return Response(status_code=CLIENT_CLOSED)  # nobody reads it
    except Exception:
        logger.exception("%s failed", route)
        return JSONResponse(
            {"detail": "internal error in the gateway; the details are in its log"},
            status_code=500,
        )
    finally:
        metrics.REQUEST_SECONDS.labels(route, str(status)).observe(time.perf_counter() - start)


@_image_route("/colorize", "Colorize a photo (DDColor)")
async def colorize(
    request: Request,
    render_factor: RenderFactor = DEFAULT_RENDER_FACTOR,
    output_format: OutputFormat = "png",
    model: ColorizeModel = DEFAULT_MODEL["colorize"],
) -> Response:
    return await _answer(request, operations.Colorize(render_factor, output_format, model))


@_image_route("/restore", "Restore a photo: denoise or deblur (NAFNet)")
async def restore(
    request: Request,
    tile_size: TileSize = 0,
    output_format: OutputFormat = "png",
    model: RestoreModel = DEFAULT_MODEL["restore"],
) -> Response:
    return await _answer(request, operations.Restore(tile_size, output_format, model))


@_image_route("/face-restore", "Restore faces (CodeFormer with facexlib)")
async def face_restore(
    request: Request,
    fidelity: Annotated[
        float, Query(ge=0, le=1, description="0 = best quality, 1 = closest to the input.")
    ] = 0.5,
    upscale: Annotated[
        int, Query(ge=1, le=4, description="The answer is upscale x the input.")
    ] = 2,
    only_center_face: Annotated[bool, Query(description="Restore the central face only.")] = False,
    has_aligned: Annotated[
        bool, Query(description="The input is one aligned 512x512 face crop.")
    ] = False,
    output_format: OutputFormat = "png",
    model: FaceModel = DEFAULT_MODEL["face-restore"],
) -> Response:
    op = operations.FaceRestore(
        fidelity, upscale, only_center_face, has_aligned, output_format, model
    )
    return await _answer(request, op)


@_image_route("/upscale", "Upscale a photo (Real-ESRGAN)")
async def upscale(
    request: Request,
    scale: Annotated[
        int, Query(ge=1, le=8, description="The answer is exactly scale x the input.")
    ] = 4,
    tile_size: TileSize = 512,
    output_format: OutputFormat = "png",
    model: UpscaleModel = DEFAULT_MODEL["upscale"],
) -> Response:
    return await _answer(request, operations.Upscale(scale, tile_size, output_format, model))


BoxSide = Annotated[
    int,
    Query(
        ge=16,
        le=16384,
        description="Target box side in px: the result is fitted into width x height "
        "(aspect ratio kept).",
    ),
]

_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n"}


def _auto_or_bool(value: object) -> object:
    """`auto`, or any spelling of a boolean that FastAPI takes for one (`1`, `yes`, `off`...)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return "true"
        if text in _FALSE:
            return "false"
        return text
    return value


AutoColorize = Annotated[
    Literal["auto", "true", "false"],
    BeforeValidator(_auto_or_bool),
    Query(
        description="Run the colorize model (first step). auto: only on a photo without colour "
        "of its own (grayscale, or one tint such as sepia); a colour photo keeps its colours "
        "and X-Steps says `colorize skipped (colour photo)`. true/false: always/never."
    ),
]


@_image_route("/pipeline", "Chain the models: colorize, restore, upscale, fit the box, faces")
async def pipeline(
    # In the order the steps run (tasks.plan_pipeline), each step's own options after it: the
    # API docs and the page list them so.
    request: Request,
    colorize: AutoColorize = "auto",
    render_factor: RenderFactor = DEFAULT_RENDER_FACTOR,
    restore: Annotated[bool, Query(description="Run the restore model.")] = True,
    restore_tile_size: TileSize = 0,
    upscale: Annotated[
        bool, Query(description="Upscale with the model when smaller than the box.")
    ] = True,
    upscale_tile_size: TileSize = 512,
    width: BoxSide = 2400,
    height: BoxSide = 2400,
    face_restore: Annotated[bool, Query(description="Restore faces (last step).")] = True,
    fidelity: Annotated[
        float,
        Query(ge=0, le=1, description="Face step: 0 = best quality, 1 = closest to the input."),
    ] = 0.7,
    only_center_face: Annotated[
        bool, Query(description="Face step: restore the central face only.")
    ] = False,
    output_format: OutputFormat = "png",
    colorize_model: StepColorizeModel = DEFAULT_MODEL["colorize"],
    restore_model: StepRestoreModel = DEFAULT_MODEL["restore"],
    upscale_model: StepUpscaleModel = DEFAULT_MODEL["upscale"],
    face_restore_model: StepFaceModel = DEFAULT_MODEL["face-restore"],
) -> Response:
    options = tasks.PipelineOptions(
        colorize=tasks.AUTO if colorize == "auto" else colorize == "true",
        restore=restore,
        upscale=upscale,
        face_restore=face_restore,
        width=width,
        height=height,
        render_factor=render_factor,
        restore_tile_size=restore_tile_size,
        fidelity=fidelity,
        upscale_tile_size=upscale_tile_size,
        only_center_face=only_center_face,
        colorize_model=colorize_model,
        restore_model=restore_model,
        upscale_model=upscale_model,
        face_restore_model=face_restore_model,
    )
    return await _answer(request, operations.Pipeline(options, output_format))


@router.get(
    "/health",
    summary="Readiness of each model's predictor, with variant and device",
    description="Per model: `ready`, `state` (ready, starting, unavailable, not offered), "
    "`variant`, `device`, `predictor` (its address), `detail` (why not ready) and `about` "
    "(the model, one line on what it does, its licence and whether it allows commercial use).",
)
async def health() -> JSONResponse:
    models = await state.predictors.health(TASKS)
    # Tasks left out on purpose (no predictor address, e.g. TASKS=... make run) do not count.
    served = [task for task in TASKS if state.settings.addresses.get(task)]
    ready = sum(models[task]["ready"] for task in served)
    status = "ok" if served and ready == len(served) else ("degraded" if ready else "unavailable")
    return JSONResponse({"status": status, "models": models})


def _install() -> None:
    app.title = "photo-enhance"
    app.description = (
        "Colorize, restore, face-restore and upscale photos. Upload the image as multipart "
        "field `file` (or a raw image/* body); the answer is the encoded image. With the "
        "header `Prefer: respond-async` the request becomes a job: 202 with `Location: "
        "/v1/jobs/{id}` (status, progress, events, result, cancel; `Idempotency-Key` honoured; "
        "`?webhook=URL` POSTs the job, signed as Standard Webhooks do, when it ends)."
    )
    app.include_router(router, tags=["photo-enhance"])
    app.include_router(router, prefix="/v1", tags=["photo-enhance (v1 aliases)"])
    app.include_router(jobs_api.router)
    jobs_service.install(app, lambda: state)
    surface.close(app)
    docs.install(app)  # /docs and /redoc from packaged files, relative URLs (docs.py)

    from . import page  # the web page at / (its own module; imported here, where it is hooked up)

    page.install(app)


_install()
