"""What a predictor serves beyond inference, narrowed from KServe's defaults.

- Model repository load/unload are not served: an unauthenticated unload would take the model
  down until a restart. REST answers 404; gRPC answers UNIMPLEMENTED.
- Readiness answers 503 with the reason in one response and logs nothing: KServe logs a
  traceback for each not-ready probe (every 5 s in the chart). REST requests to a model that is
  not loaded (or shutting down) get the same 503 without a traceback. The probes' own access,
  timing and gRPC lines are at DEBUG (common/logs.py).
- Model versions and V1 `:explain` are not served: 404 with the reason (KServe answers 501).
- HEAD is answered wherever GET is (common/head.py), not 405.
- A malformed request is 400 with an `error` the client can act on (FastAPI's would be 422);
  a body over the gRPC message limit is 413 before it is read (bodylimit.py).
- A REST call whose client hangs up is cancelled: its work stops as a gRPC call's does
  (disconnect.py).
- Every route answers with FastAPI's JSONResponse: KServe makes the app's default ORJSONResponse,
  which FastAPI deprecates (a FastAPIDeprecationWarning at the first probe).

The routes are declared on KServe's app before KServe adds its own at start: FastAPI matches
the first route declared, so these win for their paths.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from grpc_interceptor.exceptions import Unimplemented
from kserve.errors import ModelNotFound
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from starlette.types import ASGIApp, Receive, Scope, Send

from common.head import HeadAsGet

from .base import NotLoaded
from .bodylimit import BodyLimit
from .cancel import Cancelled
from .disconnect import CancelOnDisconnect
from .v2codec import BadRequest

log = logging.getLogger(__name__)
REPOSITORY_CLOSED = "model load and unload are not served by this predictor"
NOT_SERVED = "model versions and explanations are not served by this predictor"


class UnknownModel(ModelNotFound):
    """A model this predictor does not serve: 404 (REST) / NOT_FOUND (gRPC) in one log line
    (KServe's handler for ModelNotFound logs a traceback for each)."""


class ClosedRepository(ModelRepositoryExtension):
    """KServe's repository extension without load and unload (what gRPC's servicer calls)."""

    async def load(self, model_name: str) -> None:
        raise Unimplemented(REPOSITORY_CLOSED)

    async def unload(self, model_name: str) -> None:
        raise Unimplemented(REPOSITORY_CLOSED)


def install_routes(app: FastAPI, dataplane: DataPlane, max_body: int) -> None:
    # Before KServe registers its routes (at start): they take the router's default then.
    app.router.default_response_class = JSONResponse
    app.add_middleware(CancelOnDisconnect)  # a REST call's work stops when its client leaves
    app.add_middleware(NotServed)  # model versions and V1 explain: 404, not KServe's 501
    app.add_middleware(HeadAsGet)  # HEAD wherever GET is served (common/head.py)
    app.add_middleware(BodyLimit, limit=max_body)  # 413 before the body (bodylimit.py)

    def not_ready(reason: str) -> JSONResponse:
        return JSONResponse({"error": reason, "ready": False}, status_code=503)

    async def server_ready():
        if await dataplane.ready():
            return {"ready": True}
        return not_ready(_reasons(dataplane) or "not ready")

    async def model_ready(model_name: str):
        model = dataplane.model_registry.get_model(model_name)
        if model is None:
            return JSONResponse({"error": f"Model with name {model_name} does not exist."}, 404)
        if await model.healthy():
            return {"name": model_name, "ready": True}
        return not_ready(_reason(model))

    async def repository_closed(model_name: str):
        return JSONResponse({"error": REPOSITORY_CLOSED}, status_code=404)

    async def unavailable(request: Request, exc: Exception):
        # expected while loading or shutting down: the status says it, no traceback in the log
        return not_ready(exc.details)

    async def malformed(request: Request, exc: RequestValidationError):
        # FastAPI answers 422 with its own shape; the OIP's is 400 with "error"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        return JSONResponse({"error": f"malformed request: {problems}"}, status_code=400)

    app.add_exception_handler(RequestValidationError, malformed)

    async def bad_request(request: Request, exc: BadRequest):
        log.warning("invalid request (%s): %s", request.url.path, exc.reason)
        return JSONResponse({"error": exc.reason}, status_code=400)

    app.add_exception_handler(BadRequest, bad_request)

    async def unknown_model(request: Request, exc: UnknownModel):
        log.info("%s: %s", request.url.path, exc.reason)
        return JSONResponse({"error": exc.reason}, status_code=404)

    app.add_exception_handler(UnknownModel, unknown_model)
    app.add_exception_handler(NotLoaded, unavailable)
    app.add_exception_handler(Cancelled, unavailable)
    app.add_api_route("/v2/health/ready", server_ready, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/ready", model_ready, methods=["GET"])
    for action in ("load", "unload"):
        path = f"/v2/repository/models/{{model_name}}/{action}"
        app.add_api_route(path, repository_closed, methods=["POST"])


class NotServed:
    """404 for what KServe routes but cannot serve, and answers 501 (a server error) for:
    versioned models (`/versions/` in the path or a `model_version` query) and V1 `:explain`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "/versions/" in scope["path"]
            or scope["path"].endswith(":explain")
            or b"model_version=" in scope.get("query_string", b"")
        ):
            await JSONResponse({"error": NOT_SERVED}, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _reason(model) -> str:
    if getattr(model, "stopping", False):
        return f"{model.name}: shutting down"
    error = getattr(model, "load_error", None)
    return f"{model.name}: {error or 'the weights are still loading'}"


def _reasons(dataplane: DataPlane) -> str:
    models = dataplane.model_registry.get_models().values()
    return "; ".join(_reason(m) for m in models if not m.ready)
