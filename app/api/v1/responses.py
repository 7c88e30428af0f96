"""OpenAPI declarations of the problem responses endpoints can give."""

from typing import Any

from app.schemas.common import Problem

PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Problem answers a route can give: its own, plus those any authenticated route can give."""
    return dict.fromkeys((400, 401, 413, 422, 429, *statuses), PROBLEM)
