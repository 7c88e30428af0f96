"""Small query-building helpers shared by the services."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import BigInteger, ColumnElement, Select, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.db.base import Base

T = TypeVar("T")
M = TypeVar("M", bound=Base)


def where_equal(query: Select[Any], conditions: dict[InstrumentedAttribute[Any], Any]) -> Select[Any]:
    """Add `column = value` for every condition whose value is given (not None)."""
    for column, value in conditions.items():
        if value is not None:
            query = query.where(column == value)
    return query


def any_of(column: InstrumentedAttribute[int], name: str) -> ColumnElement[bool]:
    """`column = ANY(:name)`, the ids bound as one array: the statement is the same however many
    there are, where an `IN` list is rendered anew at each execution and makes a new statement for
    asyncpg to prepare for each number of ids."""
    return column == any_(bindparam(name, type_=ARRAY(BigInteger)))


def where_within(
    query: Select[Any], column: InstrumentedAttribute[Any], since: Any | None, until: Any | None
) -> Select[Any]:
    """Add `since <= column < until`, each bound only if given."""
    if since is not None:
        query = query.where(column >= since)
    if until is not None:
        query = query.where(column < until)
    return query


async def paginate(session: AsyncSession, query: Select[T], limit: int, offset: int) -> tuple[list[T], int]:
    """One page of an ordered query, and how many rows the whole query has."""
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = await session.scalars(query.limit(limit).offset(offset))
    return list(rows), total or 0


async def get_owned(session: AsyncSession, model: type[M], row_id: int, owner_id: int | None) -> M | None:
    """The row with this id, fresh from the database; with `owner_id`, only if that user owns it
    (another user's row looks like a missing one)."""
    query = select(model).where(model.id == row_id)  # type: ignore[attr-defined]
    if owner_id is not None:
        query = query.where(model.user_id == owner_id)  # type: ignore[attr-defined]
    row: M | None = await session.scalar(query.execution_options(populate_existing=True))
    return row
