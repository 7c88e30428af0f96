"""Rows inserted as one array per column (app/db/bulk_insert.py) keep the columns' own limits."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import clock
from app.db.bulk_insert import insert_rows
from app.services.audit import AUDIT_TABLE, Actor, audit_row
from tests.checks import count


async def test_a_text_longer_than_its_column_is_refused_not_cut(db: AsyncConnection) -> None:
    fits = audit_row(Actor.system(), "booking.created", "booking", 1, clock.now(), request_id="fits")
    too_long = fits | {"action": "x" * 65}  # the column is VARCHAR(64)
    statement, params = insert_rows({AUDIT_TABLE: [fits, too_long]})
    with pytest.raises(DBAPIError) as refused:
        await db.execute(statement, params)
    assert getattr(refused.value.orig, "sqlstate", None) == "22001"  # a value the database cannot take
    await db.rollback()
    assert await count(db, "audit_log") == 0


async def test_a_json_value_that_is_a_list_stays_one_value(db: AsyncConnection) -> None:
    row = audit_row(Actor.system(), "booking.created", "booking", 1, clock.now(), request_id="json")
    rows = [row | {"after": [1, [2, 3]]}, row | {"after": {"a": 1}}]
    statement, params = insert_rows({AUDIT_TABLE: rows})
    await db.execute(statement, params)
    stored = (await db.execute(text("SELECT after FROM audit_log ORDER BY id"))).scalars().all()
    await db.rollback()
    assert stored == [[1, [2, 3]], {"a": 1}]
