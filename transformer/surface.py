"""The gateway's public surface: its own routes and nothing else of KServe's (CONTRACT 1).

KServe's REST server also registers V1/V2 inference, model repository load/unload and model
metadata endpoints on the same app. They mean nothing on the gateway and must not be reachable
(the Ingress forwards /v1/...), so every path outside the list below answers 404 before routing,
and the OpenAPI document lists only the gateway's own routes.

KServe's routes that remain (V2 health) answer with FastAPI's JSONResponse: KServe makes the app's
default ORJSONResponse, which FastAPI deprecates (a FastAPIDeprecationWarning at the first probe).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from common.head import HeadAsGet

ROUTES = ("/colorize", "/restore", "/face-restore", "/upscale", "/pipeline", "/health")
JOBS = "/v1/jobs/"  # the job resource (CONTRACT section 6), under /v1 only
JOB_ROUTES = tuple(f"{JOBS}{{job_id}}{tail}" for tail in ("", "/result", "/events", "/cancel"))
# The documented routes, bare and under /v1 (the same handlers), and the job resource.
DOCUMENTED = frozenset(ROUTES) | {f"/v1{route}" for route in ROUTES} | set(JOB_ROUTES)
SERVED = DOCUMENTED | {
    "/",  # the web page
    "/metrics",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/v2/health/live",  # the gateway's own probes (chart: livenessProbe, readinessProbe)
    "/v2/health/ready",
}
SERVED_PREFIXES = ("/ui/", "/docs/assets/", JOBS)  # the page's and the docs' files, the jobs


def is_served(path: str) -> bool:
    return path in SERVED or path.startswith(SERVED_PREFIXES)


class ClosedSurface:
    """ASGI middleware: 404 `{"detail": "Not Found"}` for any path the gateway does not serve."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_served(scope["path"]):
            await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def close(app: FastAPI) -> None:
    """Serve only SERVED on `app` (HEAD wherever GET), and document only DOCUMENTED in its
    OpenAPI."""
    # Before KServe registers its routes (at start): they take the router's default then.
    app.router.default_response_class = JSONResponse
    app.add_middleware(ClosedSurface)
    app.add_middleware(HeadAsGet)  # HEAD wherever GET is served (common/head.py)
    full_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = full_openapi()
            schema["paths"] = {p: v for p, v in schema["paths"].items() if p in DOCUMENTED}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
