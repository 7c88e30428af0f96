"""Shapes shared by every endpoint: pages, problem details, money."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

T = TypeVar("T")

# Money travels as a decimal string ("49.90"), never as a float.
Money = Annotated[Decimal, PlainSerializer(lambda value: f"{value:.2f}", return_type=str, when_used="json")]


def _printable(value: str) -> str:
    # PostgreSQL text cannot hold NUL, nor what UTF-8 cannot encode (an unpaired surrogate such as
    # "\ud800", which JSON can escape): refusing them here keeps them from failing a whole batch later.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (no unpaired surrogates)") from None
    return value


def _documents_no_nul(schema: dict[str, Any]) -> None:
    schema.setdefault("pattern", r"^[^\u0000]*$")  # a field's own pattern already says more


# Every free-text field of a request body.
Text = Annotated[str, AfterValidator(_printable), Field(json_schema_extra=_documents_no_nul)]
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


ISO_DATE_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_8601(value: Any) -> Any:
    # Pydantic also reads numbers (0.5, "1700000000") as Unix timestamps: a time sent is a date.
    if isinstance(value, datetime) or (isinstance(value, str) and ISO_DATE_START.match(value)):
        return value
    raise ValueError("must be an ISO 8601 date or date-time, e.g. 2026-01-31T18:00:00Z")


# A time a client sends (query or body).
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_8601)]
