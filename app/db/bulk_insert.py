"""New rows of several tables in one statement, each column sent as one array parameter.

`INSERT INTO t (a, b) SELECT unnest(:a), unnest(:b)`: the statement is the same however many rows
go in, so SQLAlchemy compiles it once and asyncpg prepares it once, and asyncpg encodes each array
in C instead of SQLAlchemy binding a VALUES list row by row. The tables after the first go in as
data-modifying CTEs of the first one's `INSERT`, or all of them as CTEs of another statement: one
round trip for all of them. Their rows must not depend on each other, nor on what that statement
changes (PostgreSQL runs the parts of one statement on the same snapshot).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Insert, String, Table, bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.selectable import HasCTE
from sqlalchemy.types import TypeEngine

Rows = Sequence[Mapping[str, Any]]
S = TypeVar("S", bound=HasCTE)
Shape = tuple[tuple[Table, tuple[str, ...]], ...]  # each table with the columns its rows carry


def insert_rows(rows_by_table: Mapping[Table, Rows]) -> tuple[Insert, dict[str, list[Any]]]:
    """The statement inserting every table's rows (each table's rows carry the same columns), and
    its parameters. No table may be given without rows."""
    shape = _shape(rows_by_table)
    return _insert_statement(shape), _parameters(shape, rows_by_table)


def with_new_rows(statement: S, rows_by_table: Mapping[Table, Rows]) -> tuple[S, dict[str, list[Any]]]:
    """`statement` (made once, not per call) inserting every table's rows too, in the same round
    trip, and the parameters of the rows."""
    shape = _shape(rows_by_table)
    return _with_inserts(statement, shape), _parameters(shape, rows_by_table)


def _shape(rows_by_table: Mapping[Table, Rows]) -> Shape:
    return tuple((table, tuple(rows[0])) for table, rows in rows_by_table.items())


def _parameters(shape: Shape, rows_by_table: Mapping[Table, Rows]) -> dict[str, list[Any]]:
    params: dict[str, list[Any]] = {}
    for table, columns in shape:
        rows = rows_by_table[table]
        for column in columns:
            params[_parameter(table, column)] = [row[column] for row in rows]
    return params


@functools.lru_cache(maxsize=64)
def _insert_statement(shape: Shape) -> Insert:
    (first, first_columns), *others = shape
    return _add_inserts(_insert(first, first_columns), tuple(others))


@functools.lru_cache(maxsize=64)
def _with_inserts(statement: S, shape: Shape) -> S:
    return _add_inserts(statement, shape)


def _add_inserts(statement: S, shape: Shape) -> S:
    for table, columns in shape:
        statement = statement.add_cte(_insert(table, columns).cte(f"new_{table.name}"))
    return statement


def _insert(table: Table, columns: tuple[str, ...]) -> Insert:
    # One dimension, said: a JSON value that is a list must not read as a second one.
    arrays = (
        func.unnest(
            bindparam(_parameter(table, column), type_=ARRAY(_unbounded(table.c[column].type), dimensions=1))
        ).label(column)
        for column in columns
    )
    return insert(table).from_select(list(columns), select(*arrays))


def _unbounded(column_type: TypeEngine[Any]) -> TypeEngine[Any]:
    """The column's type without its length: the array is cast to it explicitly, and an explicit
    cast to VARCHAR(n) cuts a longer text short, where the INSERT's own assignment refuses it
    (SQLSTATE 22001, a value the database cannot take)."""
    if not isinstance(column_type, String) or column_type.length is None:
        return column_type
    unbounded = column_type.copy()
    unbounded.length = None
    return unbounded


def _parameter(table: Table, column: str) -> str:
    return f"{table.name}_{column}"
