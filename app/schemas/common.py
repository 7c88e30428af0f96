"""Shapes shared by every endpoint: pages, problem details, money."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer

T = TypeVar("T")

# Money travels as a decimal string ("49.90"), never as a float.
Money = Annotated[Decimal, PlainSerializer(lambda value: f"{value:.2f}", return_type=str, when_used="json")]


def _printable(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refusing it here keeps it from failing a whole batch later.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Every free-text field of a request body.
Text = Annotated[str, AfterValidator(_printable)]
MAX_PAGE_SIZE = 100
MAX_OFFSET = 1_000_000_000


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class Problem(BaseModel):
    """RFC 9457 problem details, plus a stable machine-readable `code`."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class ORMModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
