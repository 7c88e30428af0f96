"""OpenAPI declarations of the problem responses endpoints can give."""

from typing import Any

from app.schemas.common import Problem

PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return dict.fromkeys((401, 422, *statuses), PROBLEM)
