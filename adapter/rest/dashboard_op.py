"""Measure/$dashboard: the dashboard's data (adapter/dashboard/data.py) for the caller.

    GET [base]/Measure/$dashboard[?month=2026-10][&asOf=2026-11-03]

The /dashboard page and /dashboard/data.json (api/dashboard_routes.py) call this operation
through the router, like any FHIR request, so the same things hold as for every other read:
the SMART scopes are checked (reading Measure by the router; Patient and Task here, since
children are named), counts and lists carry the store's restriction on Patient ids (as
`$evaluate-measure`), Patients are read with the store's access checks, and the request's
AuditEvent names every child the page listed. The Measures are those published in the store
(profiles/measures/ at start-up), whatever they are. The answer is JSON, not a FHIR resource.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from sqlalchemy import literal

from ..dashboard import data
from ..fhir.errors import FhirError, bad_request
from ..security import scopes
from ..store.repository import Transaction
from .messages import FhirRequest, FhirResponse

NEEDED = ("Measure", "Patient", "Task")
BATCH = 100


def dashboard(router, tx: Transaction, req: FhirRequest, base: str, target: list[str]) -> FhirResponse:
    if req.method != "GET" or target != ["Measure"]:
        raise bad_request("the dashboard is GET Measure/$dashboard?month=YYYY-MM")
    caller = tx.caller
    if not caller.unrestricted:
        missing = [t for t in NEEDED if not scopes.allows(caller.scopes, t, "r")]
        if missing:
            raise FhirError(403, "forbidden", f"the dashboard needs read access to {', '.join(NEEDED)}; the "
                                              f"access token's scopes do not allow reading {', '.join(missing)}")
    params = dict(req.params)
    today = datetime.now(UTC).date()
    as_of = _date(params.get("asOf"), "asOf") or today
    month = _month(params.get("month")) or as_of.replace(day=1)
    def restrict(column):
        return tx.restriction("Patient", literal("Patient"), column)

    body = data.assemble(tx.conn, restrict, published_measures(router, tx), month, as_of,
                         lambda ids: read_patients(router, tx, ids))
    body["generated"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body["caller"] = {"organisation": caller.organisation, "role": caller.role}
    return FhirResponse(200, content=json.dumps(body).encode(), media_type="application/json")


def published_measures(router, tx: Transaction) -> list[dict]:
    """The active Measures in the store (the server's own, and any published since)."""
    query = router.parser.parse("Measure", [("status", "active"), ("_count", str(router.settings.max_page_size))])
    return [s.resource() for s in tx.search(query).matches]


def read_patients(router, tx: Transaction, ids: list[str]) -> dict[str, dict]:
    """The children's Patient resources the caller may see, by a search on _id (the store's
    access checks; the audit records each one read)."""
    found: dict[str, dict] = {}
    for i in range(0, len(ids), BATCH):
        chunk = ids[i:i + BATCH]
        query = router.parser.parse("Patient", [("_id", ",".join(chunk)), ("_count", str(len(chunk)))])
        for stored in tx.search(query).matches:
            found[stored.res_id] = stored.resource()
    return found


def _date(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise bad_request(f"{name} '{value[:40]}' is not a date (YYYY-MM-DD)", [name]) from None


def _month(value: str | None) -> date | None:
    if not value:
        return None
    text = value.strip()
    try:
        if len(text) != 7 or text[4] != "-":
            raise ValueError
        return date(int(text[:4]), int(text[5:7]), 1)
    except ValueError:
        raise bad_request(f"month '{value[:40]}' is not a month like 2026-10", ["month"]) from None
