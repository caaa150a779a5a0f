"""Shared fixtures: the adapter served over real HTTP, on SQLite and on PostgreSQL.

Every test that takes `fhir` runs once per backend. PostgreSQL tests fail (not skip)
when CI is set and the server is unreachable, so CI always exercises both.
"""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.support.auth import ADMIN_HEADERS
from tests.support.server import (
    postgres_database,
    require_postgres,
    running_server,
    sqlite_database,
)

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    if request.param == "postgresql":
        require_postgres()
    return request.param


@pytest.fixture(scope="session")
def database_url(backend, tmp_path_factory):
    if backend == "sqlite":
        with sqlite_database(tmp_path_factory.mktemp("sqlite")) as url:
            yield url
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture(scope="session")
def base_url(database_url) -> str:
    with running_server(database_url) as base:
        yield base


class Fhir:
    """A small HTTP helper bound to the FHIR base; returns requests' Response objects."""

    JSON = "application/fhir+json"

    def __init__(self, base: str, headers: dict[str, str] | None = None):
        self.base = base
        self.http = requests.Session()
        self.http.headers.update(headers or ADMIN_HEADERS)

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base}/{path.lstrip('/')}"

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.url(path), **kw)

    def post(self, path: str, resource=None, headers=None, **kw) -> requests.Response:
        from adapter.fhir import jsonio

        return self.http.post(self.url(path), data=jsonio.dumps(resource) if resource is not None else None,
                              headers={"Content-Type": self.JSON, **(headers or {})}, **kw)

    def put(self, path: str, resource=None, headers=None, **kw) -> requests.Response:
        return self.http.put(self.url(path), json=resource, headers={"Content-Type": self.JSON, **(headers or {})}, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.http.delete(self.url(path), **kw)

    def patch(self, path: str, ops, headers=None) -> requests.Response:
        import json

        return self.http.patch(self.url(path), data=json.dumps(ops),
                               headers={"Content-Type": "application/json-patch+json", **(headers or {})})

    def create(self, resource: dict) -> dict:
        r = self.post(resource["resourceType"], resource)
        assert r.status_code == 201, r.text
        return r.json()

    def search(self, path: str, **params) -> dict:
        r = self.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def fhir(base_url) -> Fhir:
    return Fhir(base_url)


@pytest.fixture
def tag() -> str:
    """A unique token so that each test can find exactly its own resources."""
    return uuid.uuid4().hex[:16]
