"""New rows of several tables in one statement, each column sent as one array parameter.

`INSERT INTO t (a, b) SELECT unnest(:a), unnest(:b)`: the statement is the same however many rows
go in, so SQLAlchemy compiles it once and asyncpg prepares it once, and asyncpg encodes each array
in C instead of SQLAlchemy binding a VALUES list row by row. The tables after the first go in as
data-modifying CTEs of the first one's `INSERT`: one round trip for all of them. Their rows must
not depend on each other (PostgreSQL runs the parts of one statement on the same snapshot).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Insert, Table, bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY

Rows = Sequence[Mapping[str, Any]]
Shape = tuple[tuple[Table, tuple[str, ...]], ...]  # each table with the columns its rows carry


def insert_rows(rows_by_table: Mapping[Table, Rows]) -> tuple[Insert, dict[str, list[Any]]]:
    """The statement inserting every table's rows (each table's rows carry the same columns), and
    its parameters. No table may be given without rows."""
    shape = tuple((table, tuple(rows[0])) for table, rows in rows_by_table.items())
    params: dict[str, list[Any]] = {}
    for table, columns in shape:
        rows = rows_by_table[table]
        for column in columns:
            params[_parameter(table, column)] = [row[column] for row in rows]
    return _statement(shape), params


@functools.lru_cache(maxsize=64)
def _statement(shape: Shape) -> Insert:
    (first, first_columns), *others = shape
    statement = _insert(first, first_columns)
    for table, columns in others:
        statement = statement.add_cte(_insert(table, columns).cte(f"new_{table.name}"))
    return statement


def _insert(table: Table, columns: tuple[str, ...]) -> Insert:
    arrays = (
        func.unnest(bindparam(_parameter(table, column), type_=ARRAY(table.c[column].type))).label(column)
        for column in columns
    )
    return insert(table).from_select(list(columns), select(*arrays))


def _parameter(table: Table, column: str) -> str:
    return f"{table.name}_{column}"
