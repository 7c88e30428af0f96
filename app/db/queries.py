"""Small query-building helpers shared by the services."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

T = TypeVar("T")


def where_equal(query: Select[Any], conditions: dict[InstrumentedAttribute[Any], Any]) -> Select[Any]:
    """Add `column = value` for every condition whose value is given (not None)."""
    for column, value in conditions.items():
        if value is not None:
            query = query.where(column == value)
    return query


async def paginate(session: AsyncSession, query: Select[T], limit: int, offset: int) -> tuple[list[T], int]:
    """One page of an ordered query, and how many rows the whole query has."""
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = await session.scalars(query.limit(limit).offset(offset))
    return list(rows), total or 0
