"""A route whose parameters are read by a handler of its own instead of FastAPI's dependency solving.

`POST /api/v1/bookings/` runs thousands of times a second in an on-sale rush, and FastAPI's walk
through its dependency graph on every request cost more CPU than the endpoint itself
(docs/scaling.md). A `DirectRoute` keeps the endpoint's declared signature, from which OpenAPI
describes the operation, and FastAPI's own validation of its headers and body on the fields
FastAPI made of that signature, so bad input gets FastAPI's answer; only the graph walk is
replaced: the route runs the user routers' guards (authentication, then the write limit) and
validates the parameters in FastAPI's order, then its `call` gets the principal and the values.
FastAPI's telemetry hooks (the body and values of a traced request) are not called for it.
"""

from __future__ import annotations

import email.message
import functools
import json
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi._compat import ModelField
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic_core import PydanticUndefined
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from app.api.deps import authenticate, limit_writes
from app.core.security import Principal

# The operation, given the request, its caller and its validated parameters (by name).
Call = Callable[[Request, Principal, Mapping[str, Any]], Awaitable[Response]]


class DirectRoute(APIRoute):
    """Subclass it with `call`, the endpoint called with its parameters."""

    call: Call

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        headers = _header_fields(self.dependant)
        header_names = [field.alias for field in headers]
        # FastAPI's own answer for a request that sends none of them, the usual case: made once.
        none_sent = request_params_to_args(headers, Headers())
        body_field = self.body_field
        call = type(self).call

        async def handle(request: Request) -> Response:
            body = await _json_body(request) if body_field else PydanticUndefined
            principal = await authenticate(request)
            await limit_writes(request, principal)
            if any(name in request.headers for name in header_names):
                values, errors = request_params_to_args(headers, request.headers)
            else:
                values, errors = dict(none_sent[0]), list(none_sent[1])
            if body_field:
                body_values, body_errors = await request_body_to_args([body_field], body, embed_body_fields=False)
                values.update(body_values)
                errors += body_errors
            if errors:
                raise RequestValidationError(errors, body=body)
            return await call(request, principal, values)

        return handle


def _header_fields(dependant: Dependant) -> list[ModelField]:
    """The header parameters in the order FastAPI solves them: sub-dependencies first."""
    fields: list[ModelField] = []
    for sub in dependant.dependencies:
        fields += _header_fields(sub)
    return fields + dependant.header_params


async def _json_body(request: Request) -> Any:
    """The body as FastAPI reads it for a JSON body parameter (strict content type)."""
    try:
        raw = await request.body()
        if not raw:
            return PydanticUndefined
        content_type = request.headers.get("content-type")
        if content_type and _is_json(content_type):
            return json.loads(raw)
        return raw
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {}}
        raise RequestValidationError([{**error, "ctx": {"error": exc.msg}}], body=exc.doc) from exc
    except HTTPException:
        raise
    except Exception as exc:
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc


@functools.lru_cache(maxsize=64)
def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))
