"""422 for a query parameter a route does not have (CONTRACT 1): `/upscale?scal=2` must not answer
a x4 image as if nothing were asked.

A dependency of the gateway's router (every image route and /health, bare and under /v1): the
names the route declares (its own parameters and its dependencies', as FastAPI knows them) are
the only ones accepted. The answer is FastAPI's validation shape, one item per unknown name:
`{"detail": [{"type": "extra_forbidden", "loc": ["query", NAME], "msg": ..., "input": VALUE}]}`.
The pages (/, /docs, /redoc), /openapi.json, /metrics and the probes are not checked: a link with
a tracking parameter still opens the page.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

_declared: dict[int, tuple[str, ...]] = {}  # id(route) -> its query parameter names
# Read from the query by the jobs (jobs/api.py) rather than declared: with `Prefer:
# respond-async` a job's URL to call when it ends; without it, the jobs answer 422 saying so.
JOB_PARAMETERS = ("webhook",)


def _query_names(dependant: Dependant) -> list[str]:
    names = [field.alias for field in dependant.query_params]
    for sub in dependant.dependencies:
        names += _query_names(sub)
    return names


def declared(route) -> tuple[str, ...]:
    names = _declared.get(id(route))
    if names is None:
        names = tuple(dict.fromkeys(_query_names(route.dependant)))
        _declared[id(route)] = names
    return names


async def no_unknown_parameters(request: Request) -> None:
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    known = declared(route)
    if request.method == "POST":  # an image route: it can become a job
        known += JOB_PARAMETERS
    unknown = [name for name in dict.fromkeys(request.query_params.keys()) if name not in known]
    if not unknown:
        return
    takes = f"it takes {', '.join(known)}" if known else "it takes none"
    raise RequestValidationError(
        [
            {
                "type": "extra_forbidden",
                "loc": ("query", name),
                "msg": f"unknown parameter {name!r} for {request.url.path} ({takes})",
                "input": request.query_params.get(name),
            }
            for name in unknown
        ]
    )
