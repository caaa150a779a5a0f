"""A real adapter HTTP server on loopback, over a real SQLite file or PostgreSQL database."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import uvicorn

from adapter.api.app import create_app
from adapter.config import load_settings
from tests.support.auth import TEST_TOKENS

POSTGRES_ADMIN_URL = os.environ.get("ADAPTER_TEST_POSTGRES_URL",
                                    "postgresql+psycopg://postgres@127.0.0.1:5432/test")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never the same twice in this process: a port is released as soon as
    it is found, so two servers started later (e.g. one after the other is stopped) could
    otherwise be given the same one."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def postgres_available() -> str | None:
    """None if PostgreSQL answers, else why not."""
    import psycopg

    try:
        with psycopg.connect(_libpq(POSTGRES_ADMIN_URL), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {exc}"


def require_postgres() -> None:
    """Skip a PostgreSQL test where there is none; in CI (env CI set) that is a failure."""
    import pytest

    why = postgres_available()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    import psycopg

    name = f"lac_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(POSTGRES_ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _db = POSTGRES_ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(_libpq(POSTGRES_ADMIN_URL), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def sqlite_database(directory: Path) -> Iterator[str]:
    yield f"sqlite:///{directory / 'adapter.sqlite3'}"


@contextmanager
def running_server(database_url: str, partners=None, **overrides) -> Iterator[str]:
    """Start the adapter on a free loopback port; yields its FHIR base URL.

    `partners` (a partner Registry) replaces config/partners.toml for what the server sends."""
    # Every test client shares 127.0.0.1: the per-client rate limit is off unless a test sets it.
    overrides.setdefault("rate_limit_per_second", 0)
    # Test clients authenticate with the static tokens of tests/support/auth.py (`serve --dev`).
    overrides.setdefault("dev_mode", True)
    overrides.setdefault("dev_tokens", TEST_TOKENS)
    settings = replace(load_settings(database_url=database_url), **overrides)
    app = create_app(settings)
    if partners is not None:
        app.state.router.partner_registry = partners
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("adapter server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        server.should_exit = True
        thread.join(10)
