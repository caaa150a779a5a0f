"""Prebuilt statements of the write path, built once and executed with parameters.

`insert(table).values(...)` built per write costs SQLAlchemy a new statement object, the
coercion of every value and a cache key before the compiled form is even found; a statement
built once and executed with a parameter dict (or a list of them: executemany) skips all of
that. A transaction Bundle writes about ten resources, each with a dozen such statements.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql import Delete, Insert, Select, Update


@cache
def insert_into(table: Table) -> Insert:
    """INSERT of whole rows (the parameters name every column given)."""
    return insert(table)


@cache
def insert_ignore(table: Table, dialect: str) -> Insert:
    """INSERT that leaves an existing row (same key) as it is."""
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table).on_conflict_do_nothing()


@cache
def delete_of(table: Table) -> Delete:
    """DELETE of a resource's rows: parameters `t` (type) and `i` (id)."""
    return delete(table).where(table.c.res_type == bindparam("t"), table.c.res_id == bindparam("i"))


@cache
def row_of(table: Table, for_update: bool) -> Select:
    """A resource's row by key: parameters `t` and `i`."""
    stmt = select(table).where(table.c.res_type == bindparam("t"), table.c.res_id == bindparam("i"))
    return stmt.with_for_update() if for_update else stmt


@cache
def replace_row(table: Table) -> Update:
    """UPDATE of a resource's current row: parameters `t`, `i` and the new column values."""
    return update(table).where(table.c.res_type == bindparam("t"), table.c.res_id == bindparam("i"))
