"""What routes answer: the problem responses they declare, and rendered models."""

from typing import Any

from fastapi import Response
from pydantic import BaseModel

from app.schemas.common import Problem

PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Problem answers a route can give: its own, plus those any authenticated route can give."""
    return dict.fromkeys((400, 401, 413, 422, 429, *statuses), PROBLEM)


def rendered(result: BaseModel | Response, status_code: int) -> Response:
    """A model rendered to JSON once; returned as a model, FastAPI would validate it again first."""
    if isinstance(result, Response):
        return result  # an idempotent replay, already rendered
    return Response(result.model_dump_json(), status_code=status_code, media_type="application/json")
