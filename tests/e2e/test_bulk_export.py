"""Bulk Data export over HTTP (asynchronous request pattern), complete and scoped, both backends."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.conftest import Fhir
from tests.security.population import CHILDREN, RECORD_TYPES, build, visible
from tests.support.auth import ADMIN_HEADERS, headers_for

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def world(base_url):
    admin = Fhir(base_url, ADMIN_HEADERS)
    pop = build(admin, uuid.uuid4().hex[:16], 9400 + (hash(base_url) % 300) * 10)
    return pop, admin, {role: Fhir(base_url, headers_for(role)) for role in ("la", "ooa", "dhc")}


def export(client: Fhir, path: str, **params) -> tuple[dict, dict[str, list[dict]]]:
    """Kick off, poll to completion; returns the manifest and the resources by type."""
    r = client.get(path, params=params, headers=ASYNC)
    assert r.status_code == 202, r.text
    status_url = r.headers["Content-Location"]
    deadline = time.monotonic() + 60
    while True:
        r = client.get(status_url)
        if r.status_code == 200:
            break
        assert r.status_code == 202, r.text
        assert "X-Progress" in r.headers
        assert time.monotonic() < deadline, "export did not finish"
        time.sleep(0.1)
    manifest = r.json()
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    out: dict[str, list[dict]] = {}
    for item in manifest["output"]:
        f = client.get(item["url"])
        assert f.status_code == 200 and f.headers["Content-Type"].startswith("application/fhir+ndjson")
        lines = [json.loads(line) for line in f.content.splitlines() if line]
        assert len(lines) == item["count"]
        assert all(x["resourceType"] == item["type"] for x in lines)
        out.setdefault(item["type"], []).extend(lines)
    return manifest, out


def ids(found: dict[str, list[dict]], rtype: str) -> set[str]:
    return {x["id"] for x in found.get(rtype, [])}


def test_system_export_is_complete(world):
    _, admin, _ = world
    manifest, found = export(admin, "$export", _type="Patient,Observation")
    for rtype in ("Patient", "Observation"):
        assert len(found[rtype]) == admin.search(rtype, _summary="count")["total"]
        assert len(ids(found, rtype)) == len(found[rtype])  # no duplicates across pages or files
    assert manifest["transactionTime"].endswith("Z") and "$export" in manifest["request"]


@pytest.mark.parametrize("role", ["la", "ooa"])
def test_patient_export_holds_exactly_what_the_role_may_see(world, role):
    pop, _, clients = world
    _, found = export(clients[role], "Patient/$export", _type=",".join(RECORD_TYPES))
    for rtype in RECORD_TYPES:
        ours = {pop.ids[(c, rtype)] for c in CHILDREN if (c, rtype) in pop.ids}
        expected = {pop.ids[(c, rtype)] for c in CHILDREN if (c, rtype) in pop.ids and visible(role, c, rtype)}
        assert ids(found, rtype) & ours == expected, rtype


def test_group_export_only_includes_visible_members(world):
    pop, admin, clients = world
    group = admin.create({"resourceType": "Group", "type": "person", "actual": True,
                          "member": [{"entity": {"reference": pop.ref(c, "Patient")}} for c in ("A", "B")]})
    # the Group itself is not about one child: only the administrator (its author) sees it
    assert clients["la"].get(f"Group/{group['id']}/$export", headers=ASYNC).status_code == 404
    _, found = export(admin, f"Group/{group['id']}/$export", _type="Patient,Observation")
    assert ids(found, "Patient") == {pop.ids[("A", "Patient")], pop.ids[("B", "Patient")]}
    assert ids(found, "Observation") == {pop.ids[("A", "Observation")], pop.ids[("B", "Observation")]}


def test_only_the_client_that_asked_sees_the_job_and_can_cancel_it(world):
    _, admin, clients = world
    r = clients["la"].get("Patient/$export", headers=ASYNC)
    status_url = r.headers["Content-Location"]
    assert clients["dhc"].get(status_url).status_code == 404
    assert clients["dhc"].delete(status_url).status_code == 404
    assert clients["la"].delete(status_url).status_code == 202
    assert clients["la"].get(status_url).status_code == 404


@pytest.mark.parametrize("params, headers, status", [
    ({}, {"Accept": "application/fhir+json"}, 400),                                  # no Prefer: respond-async
    ({"_type": "Nonsense"}, ASYNC, 400),
    ({"_outputFormat": "text/csv"}, ASYNC, 400),
    ({"_since": "yesterday"}, ASYNC, 400),
])
def test_bad_kick_off_requests(world, params, headers, status):
    _, admin, _ = world
    r = admin.get("Patient/$export", params=params, headers=headers)
    assert r.status_code == status and r.json()["resourceType"] == "OperationOutcome"


def test_an_export_is_audited(world):
    pop, admin, clients = world
    export(clients["la"], "Patient/$export", _type="Patient")
    events = admin.search("AuditEvent", patient=pop.ref("A", "Patient"), _count="200")["entry"]
    exports = [e["resource"] for e in events
               if e["resource"]["subtype"][0].get("display") == "$export" and "completed" in e["resource"]["outcomeDesc"]]
    assert exports
