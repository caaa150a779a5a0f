"""Idempotent writes: a request repeated with the same X-Request-Id is answered, not redone.

Partners retry deliveries (ours do, with the same X-Request-Id); the first processing
is recorded in the same transaction as its effects, so a retry after a lost response
gets that response back and the resources exist once.
"""

from __future__ import annotations

import json

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..exchange.outbox import utcnow
from ..fhir import jsonio
from ..store.tables import inbound_table as I
from .messages import FhirResponse

KEPT_HEADERS = ("Location", "ETag", "Last-Modified", "Content-Location")


class AlreadyProcessed(Exception):
    """Another transaction recorded the same request id first; the caller retries to replay it."""


def replay(conn: Connection, sender: str, request_id: str) -> FhirResponse | None:
    row = conn.execute(select(I).where(I.c.sender == sender, I.c.request_id == request_id)).first()
    if row is None:
        return None
    headers = json.loads(row.headers)
    headers["X-Request-Id"] = request_id
    headers["X-Replayed"] = "true"
    if row.body is None:
        return FhirResponse(row.status, headers=headers)
    return FhirResponse(row.status, headers=headers, content=row.body, media_type="application/fhir+json")


def remember(conn: Connection, sender: str, request_id: str, response: FhirResponse) -> None:
    body = response.content
    if body is None:
        resource = response.body_resource()
        body = jsonio.dumps(resource) if resource is not None else None
    headers = {k: v for k, v in response.headers.items() if k in KEPT_HEADERS}
    try:
        with conn.begin_nested():
            conn.execute(insert(I).values(sender=sender, request_id=request_id[:200], received=utcnow(),
                                          status=response.status, headers=json.dumps(headers), body=body))
    except IntegrityError:
        raise AlreadyProcessed(request_id) from None
