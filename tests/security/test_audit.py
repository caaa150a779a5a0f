"""Audit and provenance over HTTP: every read, search, write and refusal leaves an AuditEvent
(IHE BALP shape) that answers "who has looked at this child?", and every write a Provenance."""

from __future__ import annotations

import base64
import uuid

import pytest

from tests.conftest import Fhir
from tests.security.population import build
from tests.support.auth import ADMIN_HEADERS, headers_for

ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
CLIENT_ID = "https://lac-fhir-adapter.example/fhir/Id/client-id"


@pytest.fixture(scope="module")
def world(base_url):
    admin = Fhir(base_url, ADMIN_HEADERS)
    pop = build(admin, uuid.uuid4().hex[:16], 8200 + (hash(base_url) % 300) * 10)
    return pop, admin, {role: Fhir(base_url, headers_for(role)) for role in ("la", "ooa", "dhc")}


def events_about(admin: Fhir, patient_ref: str) -> list[dict]:
    found = admin.search("AuditEvent", patient=patient_ref, _count="500", _sort="-_lastUpdated")
    return [e["resource"] for e in found.get("entry", [])]


def organisations(event: dict) -> set[str]:
    return {a["who"]["identifier"]["value"] for a in event["agent"]
            if a.get("who", {}).get("identifier", {}).get("system") == ODS}


def test_who_has_looked_at_this_child(world):
    pop, admin, clients = world
    child = pop.ref("A", "Patient")
    assert clients["la"].get(pop.ref("A", "Observation")).status_code == 200
    assert clients["dhc"].search("CarePlan", subject=child)["total"] == 1
    events = events_about(admin, child)
    reads = [e for e in events if e["subtype"][0]["code"] == "read" and e["outcome"] == "0"]
    assert any(organisations(e) == {"LA-DEMO-1"} and
               any(x["what"]["reference"].startswith(pop.ref("A", "Observation")) for x in e["entity"]
                   if "what" in x) for e in reads)
    searches = [e for e in events if e["subtype"][0]["code"] == "search-type" and organisations(e) == {"RDY"}]
    assert searches, "the DHC search of the child's care plans is recorded"
    query = next(x for x in searches[0]["entity"] if x["role"]["code"] == "24")
    assert "CarePlan" in base64.b64decode(query["query"]).decode()
    event = reads[0]
    assert event["type"]["code"] == "rest" and event["action"] == "R"
    assert event["source"]["observer"]["display"] == "lac-fhir-adapter"
    assert any(a.get("requestor") for a in event["agent"])


def test_refused_attempts_are_recorded(world):
    pop, admin, clients = world
    child = pop.ref("A", "Patient")
    assert clients["ooa"].get(pop.ref("A", "Observation")).status_code == 404
    refused = [e for e in events_about(admin, child) if e["outcome"] == "4" and organisations(e) == {"ZZ901"}]
    assert refused and "404" in refused[0]["outcomeDesc"]
    # no token at all: recorded as unauthenticated
    anonymous = Fhir(admin.base, {})
    anonymous.http.headers.pop("Authorization", None)
    assert anonymous.get(pop.ref("A", "Observation")).status_code == 401
    unauthenticated = [e for e in events_about(admin, child) if e["outcome"] == "4" and any(
        a["who"].get("identifier", {}).get("value") == "unauthenticated" for a in e["agent"])]
    assert unauthenticated and "401" in unauthenticated[0]["outcomeDesc"]


def test_a_write_has_its_audit_event_and_provenance(world):
    pop, admin, clients = world
    r = clients["la"].post("Observation", {"resourceType": "Observation", "status": "final",
                                           "subject": {"reference": pop.ref("A", "Patient")},
                                           "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}})
    assert r.status_code == 201, r.text
    written = f"Observation/{r.json()['id']}"
    [provenance] = [e["resource"] for e in admin.search("Provenance", target=written)["entry"]]
    assert provenance["target"][0]["reference"] == f"{written}/_history/1"
    agent = provenance["agent"][0]
    assert agent["onBehalfOf"]["identifier"] == {"system": ODS, "value": "LA-DEMO-1"}
    assert agent["who"]["identifier"]["system"] == CLIENT_ID
    assert provenance["activity"]["coding"][0]["code"] == "CREATE"
    created = [e for e in events_about(admin, pop.ref("A", "Patient"))
               if e["action"] == "C" and any(x.get("what", {}).get("reference", "").startswith(written)
                                             for x in e.get("entity", []))]
    assert len(created) == 1 and organisations(created[0]) == {"LA-DEMO-1"}
    # the LA sees its own write's Provenance (it is about its child), the OOA trust does not
    assert clients["la"].get(f"Provenance/{provenance['id']}").status_code == 200
    assert clients["ooa"].get(f"Provenance/{provenance['id']}").status_code == 404


def test_audit_events_are_scoped_like_the_records(world):
    pop, admin, clients = world
    child = pop.ref("A", "Patient")
    clients["la"].get(child)
    admin.search("AuditEvent", _count="1")  # flushes the queue
    mine = clients["la"].search("AuditEvent", patient=child)
    assert mine["total"] >= 1
    assert clients["ooa"].search("AuditEvent", patient=child)["total"] == 0
