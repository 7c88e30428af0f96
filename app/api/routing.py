"""Two routing answers Starlette builds loosely: a 405's `Allow` (it names only the first route of
the path) and the trailing-slash redirect (an absolute URL built from the client's `Host` header)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Router
from starlette.types import Receive, Scope, Send

from app.api import problems


def install(app: FastAPI) -> None:
    router = app.router
    router.redirect_slashes = False
    not_found = router.not_found

    async def redirect_or_not_found(scope: Scope, receive: Receive, send: Send) -> None:
        location = _other_slash_location(router, scope)
        if location is None:
            await not_found(scope, receive, send)
        else:
            await RedirectResponse(location)(scope, receive, send)

    router.default = redirect_or_not_found

    async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
        allowed = _allowed_methods(router.routes, request.scope["path"])
        refused = HTTPException(405, headers={"Allow": ", ".join(allowed)}) if allowed else exc
        return await problems.http_error(request, refused)

    app.add_exception_handler(405, method_not_allowed)


def _allowed_methods(routes: list[BaseRoute], path: str) -> list[str]:
    """Every method of every route whose path pattern matches (routers included with a prefix too)."""
    methods: set[str] = set()
    for route in iter_route_contexts(routes):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(path):
            methods.update(route.methods or ())
    return sorted(methods)


def _other_slash_location(router: Router, scope: Scope) -> str | None:
    """The path with its trailing slash added or removed, when a route answers it: relative, with the query."""
    path: str = scope["path"]
    if scope["type"] != "http" or path == "/" or path.startswith("//"):
        return None  # "//host/..." would read as another site
    other = path.rstrip("/") if path.endswith("/") else path + "/"
    probe = {**scope, "path": other}
    if not any(route.matches(probe)[0] is not Match.NONE for route in router.routes):
        return None
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{other}?{query}" if query else other
