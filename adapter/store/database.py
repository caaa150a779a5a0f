"""Engines for SQLite (embedded default) and PostgreSQL, and schema upgrades.

SQLite runs in WAL mode and takes its write lock when a write transaction begins
(BEGIN IMMEDIATE), so two writers queue instead of failing half-way through.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.engine import Connection, make_url
from sqlmodel import SQLModel

from . import tables

SCHEMA_VERSION = 7
# Connections per engine (per server process). A process runs up to 40 requests at once in its
# thread pool, plus reads on its event loop, the audit writer and the outbox worker. An overflow
# connection is opened (PRAGMAs, or a PostgreSQL backend process) and closed again on every use,
# which costs more than the query, so the pool keeps most of them; PostgreSQL's default of 100
# connections still fits two server processes at their peak.
POOL_SIZE, POOL_OVERFLOW = 32, 16


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
        _configure_sqlite(engine)
        return engine
    # Custom plans always: psycopg prepares repeated statements, and a generic plan chosen while
    # the access tables were small (or before ANALYZE) scanned them on every read later.
    # No JIT: every query here is short, but the access condition's correlated EXISTS inflate
    # cost estimates past jit_above_cost, and compiling took 300 ms of a 80 ms measure query
    # (bench/measures.py, 100,000 children).
    return create_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_pre_ping=True,
                         connect_args={"options": "-c plan_cache_mode=force_custom_plan -c jit=off"})


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # pragma: no cover - exercised by every test
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA journal_size_limit=67108864")  # truncate the WAL back to 64 MiB after checkpoints
        cur.execute("PRAGMA analysis_limit=1000")           # keeps PRAGMA optimize quick on big tables
        # Reads through a memory map of the file (the OS page cache, shared by every connection)
        # instead of a read() into each connection's own 2 MiB page cache: a store larger than
        # that cache no longer costs each read its system calls and copies.
        cur.execute("PRAGMA mmap_size=1073741824")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("write", False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif options.get("snapshot", True):
            conn.exec_driver_sql("BEGIN")
        # else: each statement is its own read (Repository.transaction(snapshot=False))


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def refresh_statistics(engine: Engine) -> None:
    """Give the query planner current statistics (searches rely on them to pick indexes).

    SQLite: PRAGMA optimize (bounded by analysis_limit). PostgreSQL: ANALYZE, for servers
    where autovacuum does not run.
    """
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA optimize" if is_sqlite(engine) else "ANALYZE")
        conn.commit()


def _create_v1(conn: Connection) -> None:
    """Resources, their versions and search indexes."""
    SQLModel.metadata.create_all(conn, tables=tables.V1_TABLES)


def _create_v2(conn: Connection) -> None:
    """The outbox of messages to partners and the record of processed inbound requests."""
    SQLModel.metadata.create_all(conn, tables=tables.V2_TABLES)


def _create_v3(conn: Connection) -> None:
    """Access control: each resource's child and authors, grants, and consent decisions.

    Existing resources are given their access rows by `lac-adapter db upgrade`
    (adapter/store/access_sql.rebuild), which needs the search definitions."""
    SQLModel.metadata.create_all(conn, tables=tables.V3_TABLES)


def _create_v4(conn: Connection) -> None:
    """Bulk Data exports: jobs and their NDJSON files."""
    SQLModel.metadata.create_all(conn, tables=tables.V4_TABLES)


def _create_v5(conn: Connection) -> None:
    """Commissioning facts: per IHA/RHA Task, the dates the measures need (kpi_assessment).

    Existing Tasks are given their rows by `lac-adapter db upgrade`
    (adapter/store/facts_sql.rebuild_facts)."""
    SQLModel.metadata.create_all(conn, tables=tables.V5_TABLES)


def _create_v6(conn: Connection) -> None:
    """The remaining measures of issue 7: kpi_assessment gains the offered own consent, the
    quality audit and the health plan's return time (the table is derived data, so it is made
    again); kpi_oc2 holds the SSDA903 OC2 outcomes of the cohort.

    `lac-adapter db upgrade` rebuilds both from the stored resources
    (facts_sql.rebuild_facts, oc2_sql.rebuild_oc2)."""
    tables.assessment_fact_table.drop(conn, checkfirst=True)
    SQLModel.metadata.create_all(conn, tables=tables.V6_TABLES)


def _create_v7(conn: Connection) -> None:
    """The audit journal: read events recorded cheaply, made AuditEvent resources when idle."""
    SQLModel.metadata.create_all(conn, tables=tables.V7_TABLES)


# Ordered upgrade steps: (version reached, function). A new schema change appends a step.
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [(1, _create_v1), (2, _create_v2), (3, _create_v3),
                                                              (4, _create_v4), (5, _create_v5), (6, _create_v6),
                                                              (7, _create_v7)]


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table(tables.SchemaVersion.__tablename__):
        return 0
    versions = conn.execute(select(tables.SchemaVersion.__table__.c.version)).scalars().all()
    return max(versions, default=0)


def upgrade(engine: Engine) -> tuple[int, int]:
    """Bring the schema to SCHEMA_VERSION; returns (version before, version after)."""
    with engine.connect().execution_options(write=True) as conn:
        with conn.begin():
            before = current_version(conn)
            for version, step in MIGRATIONS:
                if version > before:
                    step(conn)
                    conn.execute(tables.SchemaVersion.__table__.insert().values(
                        version=version, applied=datetime.now(timezone.utc).replace(tzinfo=None)))
            return before, max(before, SCHEMA_VERSION)


def prepare(engine: Engine) -> None:
    """On start: create the schema in an empty database; refuse an outdated one; refresh
    the planner's statistics of an existing one."""
    with engine.connect() as conn:
        version = current_version(conn)
        conn.rollback()
    if version == 0:
        upgrade(engine)
        return
    if version < SCHEMA_VERSION:
        raise RuntimeError(f"database schema is at version {version}, this adapter needs "
                           f"{SCHEMA_VERSION}: run `lac-adapter db upgrade`")
    refresh_statistics(engine)
