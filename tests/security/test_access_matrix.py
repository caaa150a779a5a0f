"""The access matrix: every organisation role x every record type x every interaction.

A caseload of three children (tests/security/population.py) is written by the administrator;
then each partner organisation, with its own bearer token, reads, searches, pages, includes,
chains, writes and transacts over it. Whatever a role may not see is a 404 on read, absent
from every search (including `_include`, `_revinclude`, chains, `_has`, `_total`, every page
and history), and cannot be changed, deleted or written about. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools

import pytest

from tests.conftest import Fhir
from tests.security.population import CHILDREN, RECORD_TYPES, SEES, build, consent, visible
from tests.support.auth import ADMIN_HEADERS, headers_for
from tests.support.data import NHS, TAG_SYSTEM

ROLES = tuple(SEES)
SERIALS = itertools.count(7000, 10)


@pytest.fixture(scope="module")
def world(base_url, tmp_path_factory):
    import uuid

    admin = Fhir(base_url, ADMIN_HEADERS)
    tag = uuid.uuid4().hex[:16]
    pop = build(admin, tag, next(SERIALS) + (hash(base_url) % 500) * 10)
    clients = {role: Fhir(base_url, headers_for(role)) for role in ROLES}
    return pop, admin, clients


def tagged(params: dict, pop) -> dict:
    return {"_tag": f"{TAG_SYSTEM}|{pop.tag}", **params}


def ids(bundle: dict, rtype: str | None = None) -> set[str]:
    """Ids of the entries' resources (a history's deletions have no resource: their request URL)."""
    out = set()
    for e in bundle.get("entry", []):
        if "resource" in e:
            if rtype is None or e["resource"]["resourceType"] == rtype:
                out.add(e["resource"]["id"])
        elif rtype is None or e["request"]["url"].startswith(f"{rtype}/"):
            out.add(e["request"]["url"].split("/")[1])
    return out


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("rtype", RECORD_TYPES)
def test_read_vread_history_and_search_show_exactly_what_the_role_may_see(world, role, rtype):
    pop, _, clients = world
    client = clients[role]
    expected: set[str] = set()
    for child in CHILDREN:
        if (child, rtype) not in pop.ids:
            continue
        rid = pop.ids[(child, rtype)]
        allowed = visible(role, child, rtype)
        if allowed:
            expected.add(rid)
        want = 200 if allowed else 404
        r = client.get(f"{rtype}/{rid}")
        assert r.status_code == want, (role, child, rtype, r.text)
        if not allowed:  # no existence leak: the same answer as for an id that was never used
            assert r.json()["resourceType"] == "OperationOutcome"
            assert client.get(f"{rtype}/never-{rid[:20]}").status_code == 404
        assert client.get(f"{rtype}/{rid}/_history/1").status_code == want
        history = client.get(f"{rtype}/{rid}/_history")
        assert history.status_code == want  # as for an id never used
        if allowed:
            assert len(history.json()["entry"]) == history.json()["total"] == 1
    found = client.search(rtype, **tagged({"_total": "accurate"}, pop))
    assert ids(found) == expected, (role, rtype)
    assert found["total"] == len(expected)
    counted = client.search(rtype, **tagged({"_summary": "count"}, pop))
    assert counted["total"] == len(expected)
    by_id = client.search(rtype, _id=",".join(pop.ids[(c, rtype)] for c in CHILDREN if (c, rtype) in pop.ids))
    assert ids(by_id) == expected
    # paging one by one: every page filtered, links never reveal more
    seen, url, pages = set(), None, 0
    page = client.search(rtype, **tagged({"_count": "1"}, pop))
    while True:
        pages += 1
        seen |= ids(page)
        assert len(page.get("entry", [])) <= 1
        url = next((lnk["url"] for lnk in page.get("link", []) if lnk["relation"] == "next"), None)
        if url is None or pages > 10:
            break
        page = client.get(url).json()
    assert seen == expected


@pytest.mark.parametrize("role", ROLES)
def test_type_and_system_history_only_list_visible_resources(world, role):
    pop, _, clients = world
    visible_ids = {pop.ids[(c, t)] for c in CHILDREN for t in RECORD_TYPES
                   if (c, t) in pop.ids and visible(role, c, t)}
    hidden_ids = {pop.ids[(c, t)] for c in CHILDREN for t in RECORD_TYPES
                  if (c, t) in pop.ids and not visible(role, c, t)}
    for rtype in ("Observation", "Patient"):
        listed = ids(clients[role].search(f"{rtype}/_history", _count="500"))
        assert not listed & hidden_ids
    system = clients[role].search("_history", _count="500")
    listed = ids(system)
    assert not listed & hidden_ids
    assert {pop.ids[(c, "Patient")] for c in SEES[role]} <= listed | visible_ids


@pytest.mark.parametrize("role", ROLES)
def test_include_revinclude_chain_and_has_reveal_nothing_hidden(world, role):
    pop, _, clients = world
    client = clients[role]
    hidden = {pop.ids[k] for k in pop.ids if k[1] in RECORD_TYPES and not visible(role, *k)}
    # _include from Task to the child, _revinclude of clinical content onto Patients
    bundle = client.search("Task", **tagged({"_include": "Task:patient"}, pop))
    assert not ids(bundle) & hidden
    bundle = client.search("Patient", **tagged({"_revinclude": "Observation:subject",
                                                "_include:iterate": "Observation:subject"}, pop))
    assert not ids(bundle) & hidden
    assert ids(bundle, "Observation") == {pop.ids[(c, "Observation")] for c in CHILDREN
                                          if visible(role, c, "Observation")}
    # chained parameter by the hidden children's NHS numbers
    for child in CHILDREN:
        found = client.search("Task", **{"patient.identifier": f"{NHS}|{pop.nhs[child]}"})
        assert ids(found) == ({pop.ids[(child, "Task")]} if visible(role, child, "Task") else set())
    # _has: a Patient is found by a property of an Observation only if that Observation is visible
    found = client.search("Patient", **tagged({"_has:Observation:subject:code": "http://loinc.org|29463-7"}, pop))
    assert ids(found) == {pop.ids[(c, "Patient")] for c in CHILDREN if visible(role, c, "Observation")}
    # system-level search over every type
    found = client.search("", **tagged({"_count": "500"}, pop))
    assert not ids(found) & hidden


@pytest.mark.parametrize("role", ROLES)
def test_everything_gives_a_child_s_record_as_the_role_may_see_it(world, role):
    pop, admin, clients = world
    for child in CHILDREN:
        r = clients[role].get(f"{pop.ref(child, 'Patient')}/$everything", params={"_count": "3"})
        if child not in SEES[role]:
            assert r.status_code == 404
            continue
        assert r.status_code == 200, r.text
        expected = {pop.ids[(child, t)] for t in RECORD_TYPES if (child, t) in pop.ids and visible(role, child, t)}
        got, page = set(), r.json()
        assert page["total"] >= len(expected)
        assert not any(e["resource"]["resourceType"] == "AuditEvent" for e in page["entry"])
        while True:
            got |= ids(page)
            nxt = next((lnk["url"] for lnk in page["link"] if lnk["relation"] == "next"), None)
            if nxt is None:
                break
            page = clients[role].get(nxt).json()
        assert expected <= got
        hidden = {pop.ids[k] for k in pop.ids if k[1] in RECORD_TYPES and not visible(role, *k)}
        assert not got & hidden
        only = admin.get(f"{pop.ref(child, 'Patient')}/$everything", params={"_type": "Observation"}).json()
        assert {e["resource"]["resourceType"] for e in only["entry"]} == {"Observation"}
        assert pop.ids[(child, "Observation")] in ids(only)


@pytest.mark.parametrize("role", ROLES)
def test_operations_on_a_hidden_assessment_find_nothing(world, role):
    pop, _, clients = world
    for child in CHILDREN:
        qr = pop.ref(child, "QuestionnaireResponse")
        for operation in ("$report", "$export-form", "$extract"):
            r = clients[role].get(f"{qr}/{operation}") if operation != "$extract" else \
                clients[role].post(f"{qr}/{operation}")
            if visible(role, child, "QuestionnaireResponse"):
                # found: the operation goes on to complain that this response names no form
                assert r.status_code in (400, 422) and "uestionnaire" in r.text, (operation, r.status_code, r.text)
            else:
                assert r.status_code == 404, (role, child, operation, r.status_code, r.text[:200])


@pytest.mark.parametrize("role", ROLES)
def test_hidden_records_cannot_be_changed_deleted_or_written_about(world, role):
    pop, admin, clients = world
    client = clients[role]
    for child in CHILDREN:
        if child in SEES[role]:
            continue
        obs_id = pop.ids[(child, "Observation")]
        current = admin.get(f"Observation/{obs_id}").json()
        r = client.put(f"Observation/{obs_id}", dict(current, status="amended"))
        assert r.status_code == 404, r.text
        assert client.delete(f"Observation/{obs_id}").status_code in (200, 204)  # nothing there for this role
        assert admin.get(f"Observation/{obs_id}").json()["meta"]["versionId"] == current["meta"]["versionId"]
        r = client.patch(f"Observation/{obs_id}", [{"op": "replace", "path": "/status", "value": "amended"}])
        assert r.status_code == 404
        new = {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pop.ids[(child, 'Patient')]}"},
               "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}}
        r = client.post("Observation", new)
        assert r.status_code == 403, r.text
        assert r.json()["resourceType"] == "OperationOutcome"
        # a transaction that writes about a hidden child is refused as a whole
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
             "resource": tagged_resource(pop, {"resourceType": "Patient", "name": [{"family": "Fresh"}]}),
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": new, "request": {"method": "POST", "url": "Observation"}}]}
        before = admin.search("Patient", **tagged({"_summary": "count"}, pop))["total"]
        r = client.post("", bundle)
        assert r.status_code == 403, r.text
        assert admin.search("Patient", **tagged({"_summary": "count"}, pop))["total"] == before
        # a batch: the hidden read fails alone, the visible one succeeds
        entries = [{"request": {"method": "GET", "url": f"Observation/{obs_id}"}}]
        mine = next((c for c in SEES[role]), None)
        if mine:
            entries.append({"request": {"method": "GET", "url": f"Patient/{pop.ids[(mine, 'Patient')]}"}})
        out = client.post("", {"resourceType": "Bundle", "type": "batch", "entry": entries}).json()
        statuses = [e["response"]["status"] for e in out["entry"]]
        assert statuses[0].startswith("404")
        if mine:
            assert statuses[1].startswith("200")


def tagged_resource(pop, resource: dict) -> dict:
    resource["meta"] = {"tag": [{"system": TAG_SYSTEM, "code": pop.tag}]}
    return resource


def test_a_role_writes_about_its_own_children(world):
    pop, admin, clients = world
    la = clients["la"]
    r = la.post("Observation", {"resourceType": "Observation", "status": "final",
                                "subject": {"reference": pop.ref("A", "Patient")},
                                "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}})
    assert r.status_code == 201, r.text
    assert la.get(f"Observation/{r.json()['id']}").status_code == 200
    # the other LA does not see it; the trust serving LA-DEMO-1 does (consented)
    assert clients["other-la"].get(f"Observation/{r.json()['id']}").status_code == 404
    assert clients["dhc"].get(f"Observation/{r.json()['id']}").status_code == 200


def test_out_of_area_trust_sees_the_child_only_while_its_request_is_open(world):
    pop, admin, clients = world
    ooa = clients["ooa"]
    patient = pop.ref("B", "Patient")
    assert ooa.get(patient).status_code == 200
    written = ooa.create({"resourceType": "Observation", "status": "final", "subject": {"reference": patient},
                          "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}})
    task = admin.get(pop.ref("B", "Task")).json()
    for status in ("accepted", "in-progress", "cancelled"):
        task = admin.put(f"Task/{task['id']}", dict(task, status=status)).json()
    assert ooa.get(patient).status_code == 404
    assert ooa.search("Patient", _id=pop.ids[("B", "Patient")])["total"] == 0
    assert ooa.get(pop.ref("B", "Observation")).status_code == 404
    # what the trust wrote itself stays visible to it
    assert ooa.get(f"Observation/{written['id']}").status_code == 200


def test_audit_events_cannot_be_written_through_the_api(world):
    _, admin, clients = world
    event = {"resourceType": "AuditEvent", "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                                                    "code": "rest"},
             "recorded": "2026-11-01T10:00:00Z", "agent": [{"requestor": True}],
             "source": {"observer": {"display": "x"}}}
    for client in (admin, clients["la"]):
        assert client.post("AuditEvent", event).status_code == 405
    existing = admin.search("AuditEvent", _count="1")["entry"][0]["resource"]
    assert admin.put(f"AuditEvent/{existing['id']}", existing).status_code == 405
    assert admin.delete(f"AuditEvent/{existing['id']}").status_code == 405
    assert admin.patch(f"AuditEvent/{existing['id']}", [{"op": "remove", "path": "/entity"}]).status_code == 405


def test_scopes_limit_what_a_client_may_do(world):
    pop, _, _ = world
    from tests.support.auth import ROLE_TOKENS

    read_only = Fhir(world[1].base, {"Authorization": f"Bearer {ROLE_TOKENS['la-read-only'].token}"})
    assert read_only.get(pop.ref("A", "Patient")).status_code == 200
    r = read_only.post("Observation", {"resourceType": "Observation", "status": "final",
                                       "subject": {"reference": pop.ref("A", "Patient")},
                                       "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}})
    assert r.status_code == 403 and "scopes" in r.text


def test_withdrawn_consent_hides_clinical_content_at_once(world):
    pop, admin, clients = world
    obs = pop.ref("A", "Observation")
    assert clients["la"].get(obs).status_code == 200
    parent = f"RelatedPerson/{pop.ids[('A', 'RelatedPerson')]}"
    withdrawal = admin.create(consent(pop.tag, pop.ref("A", "Patient"), parent, decision="deny", when="2026-10-01"))
    assert clients["la"].get(obs).status_code == 404
    assert clients["dhc"].search("Observation", _id=pop.ids[("A", "Observation")])["total"] == 0
    assert clients["la"].get(pop.ref("A", "Patient")).status_code == 200  # the child is still theirs
    admin.delete(f"Consent/{withdrawal['id']}")
    assert clients["la"].get(obs).status_code == 200


def test_no_token_is_401_and_capability_is_public(world):
    _, admin, _ = world
    anonymous = Fhir(admin.base, {"Authorization": ""})
    anonymous.http.headers.pop("Authorization", None)
    r = anonymous.get("Patient")
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    metadata = anonymous.get("metadata").json()
    security = metadata["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert anonymous.get(".well-known/smart-configuration").json()["token_endpoint"].endswith("/auth/token")
