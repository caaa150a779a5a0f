"""Consent enforcement over HTTP, on both backends: a withdrawal stops a queued delivery and
hides clinical content at once; a 16-year-old's own refusal prevails over a parent's consent;
a Consent from someone who cannot give it is refused."""

from __future__ import annotations

import uuid

import pytest

from adapter.exchange import outbox
from adapter.store.database import make_engine
from tests.conftest import Fhir
from tests.security.population import BASE, build, consent, tagged
from tests.support.auth import ADMIN_HEADERS, headers_for
from tests.support.data import NHS, nhs_number

LEGAL_STATUS = BASE + "StructureDefinition/lac-legal-status"
LEGAL_STATUS_SYSTEM = BASE + "CodeSystem/ssda903-legal-status"


@pytest.fixture(scope="module")
def world(base_url):
    admin = Fhir(base_url, ADMIN_HEADERS)
    pop = build(admin, uuid.uuid4().hex[:16], 8600 + (hash(base_url) % 300) * 10)
    return pop, admin, {role: Fhir(base_url, headers_for(role)) for role in ("la", "dhc")}


def queued(database_url: str, subscription_id: str) -> list[outbox.Message]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return [m for m in outbox.messages(conn, limit=10_000)
                    if m.destination == f"url:subscription/{subscription_id}"]
    finally:
        engine.dispose()


def observation(pop, child: str) -> dict:
    return tagged(pop.tag, {"resourceType": "Observation", "status": "final",
                            "subject": {"reference": pop.ref(child, "Patient")},
                            "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}})


def test_withdrawal_mid_flow_stops_a_queued_delivery(world, database_url):
    pop, admin, clients = world
    child = pop.ref("A", "Patient")
    # the community trust subscribes to the child's observations (delivered by the outbox)
    sub = clients["dhc"].create({"resourceType": "Subscription", "status": "requested", "reason": "RHA follow-up",
                                 "criteria": f"Observation?subject={child}",
                                 "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook",
                                             "payload": "application/fhir+json"}})
    admin.create(observation(pop, "A"))
    [message] = queued(database_url, sub["id"])
    assert message.status == "pending" and message.patient == child
    # the parent withdraws consent to sharing: the queued notification is stopped in the same transaction
    parent = f"RelatedPerson/{pop.ids[('A', 'RelatedPerson')]}"
    admin.create(consent(pop.tag, child, parent, decision="deny", when="2026-10-01"))
    [message] = queued(database_url, sub["id"])
    assert message.status == "cancelled" and "consent" in message.last_error
    # nothing new goes out, and the content is hidden from the partners at once
    admin.create(observation(pop, "A"))
    assert len(queued(database_url, sub["id"])) == 1
    assert clients["la"].get(pop.ref("A", "Observation")).status_code == 404
    assert clients["dhc"].search("Observation", subject=child)["total"] == 0


def test_a_sixteen_year_olds_refusal_prevails_over_a_parents_consent(world):
    pop, admin, clients = world
    nhs = nhs_number(8900 + (hash(admin.base) % 300) * 10)
    young = admin.create(tagged(pop.tag, {"resourceType": "Patient", "identifier": [{"system": NHS, "value": nhs}],
                                          "birthDate": "2010-03-01", "name": [{"family": "Olderchild"}]}))
    ref = f"Patient/{young['id']}"
    admin.create({"resourceType": "EpisodeOfCare", "status": "active", "patient": {"reference": ref},
                  "managingOrganization": {"reference": f"Organization/{pop.orgs['LA-DEMO-1']}"}})
    parent = admin.create({"resourceType": "RelatedPerson", "patient": {"reference": ref}, "name": [{"family": "P"}]})
    obs = admin.create(dict(observation(pop, "A"), subject={"reference": ref}))
    la = clients["la"]
    admin.create(consent(pop.tag, ref, f"RelatedPerson/{parent['id']}", when="2026-04-01"))
    assert la.get(f"Observation/{obs['id']}").status_code == 200
    # at 16 she refuses for herself
    admin.create(consent(pop.tag, ref, ref, decision="deny", grantor="young-person", when="2026-06-01"))
    assert la.get(f"Observation/{obs['id']}").status_code == 404
    # a later parental consent does not override her decision
    admin.create(consent(pop.tag, ref, f"RelatedPerson/{parent['id']}", when="2026-07-01"))
    assert la.get(f"Observation/{obs['id']}").status_code == 404
    # her own consent does
    admin.create(consent(pop.tag, ref, ref, grantor="young-person", when="2026-08-01"))
    assert la.get(f"Observation/{obs['id']}").status_code == 200


def test_a_consent_from_someone_who_cannot_give_it_is_refused(world):
    pop, admin, _ = world
    nhs = nhs_number(9100 + (hash(admin.base) % 300) * 10)
    child = admin.create(tagged(pop.tag, {"resourceType": "Patient", "identifier": [{"system": NHS, "value": nhs}],
                                          "birthDate": "2018-01-01"}))
    ref = f"Patient/{child['id']}"
    # accommodated under section 20 (V2): the local authority holds no parental responsibility
    admin.create({"resourceType": "EpisodeOfCare", "status": "active", "patient": {"reference": ref},
                  "period": {"start": "2026-05-01"},
                  "extension": [{"url": LEGAL_STATUS, "valueCoding": {"system": LEGAL_STATUS_SYSTEM, "code": "V2"}}],
                  "managingOrganization": {"reference": f"Organization/{pop.orgs['LA-DEMO-1']}"}})
    la_org = f"Organization/{pop.orgs['LA-DEMO-1']}"
    r = admin.post("Consent", consent(pop.tag, ref, la_org, grantor="local-authority", when="2026-06-01"))
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert "lac-consent-grantor" in issue["expression"][0] and "V2" in issue["diagnostics"]
    assert admin.search("Consent", patient=ref)["total"] == 0
    # a young child cannot consent for themselves without a competence assessment
    r = admin.post("Consent", consent(pop.tag, ref, ref, grantor="young-person", when="2026-06-01"))
    assert r.status_code == 422, r.text
