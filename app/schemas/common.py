"""Shapes shared by every endpoint: pages, problem details, money."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

T = TypeVar("T")

# Money travels as a decimal string ("49.90"), never as a float.
MONEY_ANSWERED = {
    "type": "string",
    "pattern": r"^\d{1,10}\.\d{2}$",
    "description": "A decimal string with two decimals, in the currency given beside it",
    "examples": ["49.90"],
}
Money = Annotated[
    Decimal,
    PlainSerializer(lambda value: f"{value:.2f}", return_type=str, when_used="json"),
    WithJsonSchema(MONEY_ANSWERED, mode="serialization"),
]


def money_sent(schema: dict[str, Any]) -> None:
    """The documented form of an amount a client sends (`json_schema_extra` of the field): a decimal
    string. Pydantic would say number-or-string; a float loses cents, so the string is the contract."""
    schema.pop("anyOf", None)
    schema.update(
        type="string",
        pattern=r"^\d{1,10}(\.\d{1,2})?$",
        description="A decimal string with at most two decimals, from 0 to 9999999999.99",
        examples=["49.90"],
    )


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


class FieldError(BaseModel):
    """One invalid input of a `validation_error`."""

    field: str = Field(description="Where: `body.quantity`, `query.limit`, `path.booking_id`, ...")
    message: str
    type: str = Field(description="Pydantic's error type, e.g. `greater_than_equal`")


class Problem(BaseModel):
    """RFC 9457 problem details, plus a stable machine-readable `code`."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "https://errors.evently.dev/insufficient_capacity",
                    "title": "Not enough seats",
                    "status": 409,
                    "detail": "Not enough seats available: 1 left",
                    "code": "insufficient_capacity",
                    "instance": "/api/v1/bookings/",
                    "available": 1,
                }
            ]
        },
    )

    type: str = Field("about:blank", description="`https://errors.evently.dev/<code>`")
    title: str
    status: int = Field(ge=100, le=599)
    detail: str
    code: str = Field(description="Stable and machine-readable; see each response's list")
    instance: str | None = Field(None, description="The path of the request")
    errors: list[FieldError] | None = Field(None, description="`validation_error`: each invalid input")
    available: int | None = Field(None, description="`insufficient_capacity`: the seats left")


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
