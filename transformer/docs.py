"""/docs (Swagger UI) and /redoc (ReDoc) from files in the installed packages: no CDN, no web
fonts, so they work offline and air-gapped, as the page does.

The JavaScript and CSS come from the `fastapi-offline` package (MIT; it ships swagger-ui-dist 5
and redoc 2 as files, about 2.8 MB installed, and needs nothing but FastAPI), served under
/docs/assets/. Every URL in the two pages is relative (`docs/assets/...`, `openapi.json`,
`ui/icon.svg`), so behind a proxy that serves the gateway under a path prefix the pages load
their files and the API description from under that prefix too.

ReDoc's bundle draws a "by Redocly" logo from cdn.redoc.ly in its menu (no option turns it off):
the bundle is served with that one URL replaced by an empty inline image, so the page asks no
other host for anything.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_PATH = "/docs/assets"
# Relative to /docs and /redoc (both at the root of the gateway's paths).
_ASSETS = ASSETS_PATH.lstrip("/")
_OPENAPI = "openapi.json"
_ICON = "ui/icon.svg"  # the page's own icon (transformer/static)
REDOC_JS = "redoc.standalone.js"
REDOCLY_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
EMPTY_IMAGE = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"


@cache
def redoc_js() -> tuple[bytes, str]:
    """ReDoc's bundle without its one outside URL, and its ETag."""
    body = (ASSETS / REDOC_JS).read_bytes().replace(REDOCLY_LOGO, EMPTY_IMAGE)
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def swagger_ui(title: str) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=_OPENAPI,
        title=f"{title} API",
        swagger_js_url=f"{_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{_ASSETS}/swagger-ui.css",
        swagger_favicon_url=_ICON,
        oauth2_redirect_url=None,
        # No validator badge: it would send the API description to validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )


def redoc(title: str) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=_OPENAPI,
        title=f"{title} API",
        redoc_js_url=f"{_ASSETS}/{REDOC_JS}",
        redoc_favicon_url=_ICON,
        with_google_fonts=False,
    )


def install(app: FastAPI) -> None:
    """/docs, /redoc and their files (replaces KServe's CDN-based /docs if it added one)."""
    app.router.routes[:] = [
        route
        for route in app.router.routes
        if getattr(route, "path", None)
        not in ("/docs", "/redoc", ASSETS_PATH, f"{ASSETS_PATH}/{REDOC_JS}")
    ]

    @app.get(f"{ASSETS_PATH}/{REDOC_JS}", include_in_schema=False)
    async def redoc_bundle() -> Response:  # before the mount: this one wins
        body, etag = redoc_js()
        return Response(body, media_type="text/javascript; charset=utf-8",
                        headers={"ETag": etag, "Cache-Control": "no-cache"})  # fmt: skip

    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return swagger_ui(app.title)

    @app.get("/redoc", include_in_schema=False)
    async def redoc_page() -> HTMLResponse:
        return redoc(app.title)
