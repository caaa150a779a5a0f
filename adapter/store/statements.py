"""Prebuilt statements of the write path, built once and executed with parameters.

`insert(table).values(...)` built per write costs SQLAlchemy a new statement object, the
coercion of every value and a cache key before the compiled form is even found; a statement
built once and executed with a parameter dict (or a list of them: executemany) skips all of
that. A transaction Bundle writes about ten resources, each with a dozen such statements.
New rows go in through `insert_rows`, the driver's executemany on a statement text built once.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql import Delete, Insert, Select, Update


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


def insert_rows(conn, table: Table, rows: list[dict]) -> None:
    """INSERT many rows of one table at the driver's level: one statement text per table and
    column set, the columns' own bind processors (dates as SQLAlchemy stores them), then the
    driver's executemany. SQLAlchemy's own executemany builds and processes a parameter dict
    per row, which cost more than SQLite's insert of the row and its two index entries (the
    index rows of a write, the AuditEvents of a batch of reads)."""
    if not rows:
        return
    given = frozenset(rows[0])
    if any(len(row) != len(given) or not given.issuperset(row) for row in rows):
        for row in rows:  # rows of different shapes: one statement per row
            insert_rows(conn, table, [row])
        return
    sql, columns, processors = _insert_text(table, given, conn.dialect)
    params = [tuple(p(row[c]) if p else row[c] for c, p in zip(columns, processors)) for row in rows]
    conn.exec_driver_sql(sql, params)


_TEXTS: dict = {}


def _insert_text(table: Table, given: frozenset, dialect) -> tuple[str, list[str], list]:
    """(statement text with positional parameters, its columns in order, their bind processors)."""
    key = (table.name, given, dialect.name)
    found = _TEXTS.get(key)
    if found is None:
        columns = [c.name for c in table.columns if c.name in given]
        if len(columns) != len(given):
            raise ValueError(f"{table.name} has no column(s) {sorted(given - set(columns))}")
        compiled = insert(table).values({c: bindparam(c) for c in columns}).compile(dialect=dialect)
        sql = str(compiled)
        if dialect.paramstyle == "pyformat":  # psycopg: %(name)s -> %s
            for c in columns:
                sql = sql.replace(f"%({c})s", "%s")
        elif list(compiled.positiontup or []) != columns:
            raise ValueError(f"{table.name}: parameters in an unexpected order {compiled.positiontup}")
        processors = [table.c[c].type._cached_bind_processor(dialect) for c in columns]
        found = _TEXTS[key] = (sql, columns, processors)
    return found
