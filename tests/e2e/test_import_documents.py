"""Partner documents over HTTP: a form XML imported, kept, traced, and never twice."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from tests.conftest import Fhir
from tests.support.data import NHS, nhs_number, patient
from tests.support.server import postgres_database, require_postgres, running_server

ROOT = Path(__file__).resolve().parents[2]
XML = {"Content-Type": "application/xml"}
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"


def form_for_new_child(form: str = "iha-c") -> tuple[bytes, str, str]:
    """The worked example XML with a fresh document id and a fresh child."""
    raw = (ROOT / "fixtures" / "forms-xml" / f"{form}.xml").read_text()
    original = raw.split('nhsNumber="', 1)[1].split('"', 1)[0]
    doc_id = raw.split('documentId="', 1)[1].split('"', 1)[0]
    number = nhs_number(random.randrange(100000, 999999))
    new_id = f"TEST-{uuid.uuid4().hex[:12]}"
    return raw.replace(original, number).replace(doc_id, new_id).encode(), number, new_id


def test_form_for_an_unknown_child_is_refused_and_nothing_written(fhir, tag):
    body, number, doc_id = form_for_new_child()
    r = fhir.http.post(fhir.url("$import-form"), data=body, headers=XML)
    assert r.status_code == 422
    assert "does not know" in r.json()["issue"][0]["diagnostics"]
    found = fhir.search("DocumentReference", identifier=f"https://lac-fhir-adapter.example/fhir/Id/form-document|{doc_id}")
    assert found["total"] == 0


def test_form_import_keeps_source_traces_and_is_idempotent(fhir, tag):
    body, number, doc_id = form_for_new_child()
    child = fhir.create(patient(tag, nhs=number))
    r = fhir.http.post(fhir.url("$import-form"), data=body, headers=XML)
    assert r.status_code == 201, r.text
    docref_path = r.headers["Location"].split("/fhir/")[1]
    docref = fhir.get(docref_path).json()
    assert docref["subject"]["reference"] == f"Patient/{child['id']}"
    binary = fhir.get(docref["content"][0]["attachment"]["url"]).json()
    assert binary["contentType"] == "application/xml"
    responses = fhir.search("QuestionnaireResponse", subject=f"Patient/{child['id']}")
    assert responses["total"] == 1
    qr_id = responses["entry"][0]["resource"]["id"]
    provenance = fhir.search("Provenance", entity=docref_path)
    assert f"QuestionnaireResponse/{qr_id}" in [t["reference"] for t in provenance["entry"][0]["resource"]["target"]]
    assert fhir.search("Observation", **{"derived-from": f"QuestionnaireResponse/{qr_id}"})["total"] > 0
    again = fhir.http.post(fhir.url("$import-form"), data=body, headers=XML)
    assert again.status_code == 200
    assert fhir.search("QuestionnaireResponse", subject=f"Patient/{child['id']}")["total"] == 1


def test_hostile_and_broken_documents(fhir):
    bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><HealthAssessmentForm>&x;</HealthAssessmentForm>'
    assert fhir.http.post(fhir.url("$import-form"), data=bomb, headers=XML).status_code == 400
    torn = fhir.http.post(fhir.url("$import-form"), data=b"<HealthAssessmentForm", headers=XML)
    assert torn.status_code == 400 and "line 1" in torn.json()["issue"][0]["diagnostics"]
    body, _, _ = form_for_new_child()
    wrong = body.replace(b'formVersion="1.0.0"', b'formVersion="9.9.9"')
    assert fhir.http.post(fhir.url("$import-form"), data=wrong, headers=XML).status_code == 422
    assert fhir.http.get(fhir.url("$import-form")).status_code == 405


def notification_for_new_child(name: str = "entered-care.xml") -> tuple[bytes, str, str]:
    raw = (ROOT / "fixtures" / "la-notifications" / name).read_text()
    number = raw.split("<NhsNumber>", 1)[1].split("<", 1)[0]
    child_id = raw.split("<LaChildId>", 1)[1].split("<", 1)[0]
    message = raw.split("<MessageId>", 1)[1].split("<", 1)[0]
    fresh = nhs_number(random.randrange(100000, 999999))
    new_child = f"T-{uuid.uuid4().hex[:10]}"
    raw = raw.replace(number, fresh).replace(child_id, new_child).replace(message, f"T-{uuid.uuid4().hex[:12]}")
    return raw.encode(), fresh, new_child


def test_entered_care_notification_creates_the_child_episode_and_iha_request(fhir):
    body, number, _ = notification_for_new_child()
    r = fhir.http.post(fhir.url("$la-notification"), data=body, headers=XML)
    assert r.status_code == 201, r.text
    children = fhir.search("Patient", identifier=f"{NHS}|{number}")
    assert children["total"] == 1
    pid = children["entry"][0]["resource"]["id"]
    tasks = fhir.search("Task", patient=f"Patient/{pid}")
    assert tasks["total"] == 1
    task = tasks["entry"][0]["resource"]
    assert task["restriction"]["period"]["end"] == "2027-01-20"  # 20 working days after Fri 18 Dec 2026
    assert fhir.search("EpisodeOfCare", patient=f"Patient/{pid}", status="active")["total"] == 1
    again = fhir.http.post(fhir.url("$la-notification"), data=body, headers=XML)
    assert again.status_code == 200
    assert fhir.search("Task", patient=f"Patient/{pid}")["total"] == 1


def test_change_notification_for_an_unknown_child_is_refused(fhir):
    body, _, _ = notification_for_new_child("placement-change.xml")
    r = fhir.http.post(fhir.url("$la-notification"), data=body, headers=XML)
    assert r.status_code == 422
    assert "does not know" in r.json()["issue"][0]["diagnostics"]


def test_ssda903_tables_in_a_zip(fhir):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("header.csv", "episodes.csv", "oc2.csv"):
            archive.write(ROOT / "fixtures" / "ssda903" / name, name)
    first = fhir.http.post(fhir.url("$import-903"), data=buffer.getvalue(), headers={"Content-Type": "application/zip"})
    assert first.status_code == 201, first.text
    again = fhir.http.post(fhir.url("$import-903"), data=buffer.getvalue(), headers={"Content-Type": "application/zip"})
    assert again.status_code == 200
    rows = (ROOT / "fixtures" / "ssda903" / "episodes.csv").read_text().splitlines()[1:]
    for row in rows:
        child, decom = row.split(",")[:2]
        day, month, year = decom.split("/")
        found = fhir.search("EpisodeOfCare", identifier=f"https://lac-fhir-adapter.example/fhir/Id/lac-episode|"
                                                        f"{child}/{year}-{month}-{day}")
        assert found["total"] == 1, row
    assert fhir.search("Patient", identifier="https://lac-fhir-adapter.example/fhir/Id/la-child-id|"
                                             + rows[0].split(",")[0])["total"] == 1


def test_form_round_trip_through_the_server(fhir, tag):
    from lxml import etree

    body, number, doc_id = form_for_new_child("rha-yp")
    fhir.create(patient(tag, nhs=number))
    assert fhir.http.post(fhir.url("$import-form"), data=body, headers=XML).status_code == 201
    found = fhir.search("QuestionnaireResponse", identifier=f"https://lac-fhir-adapter.example/fhir/Id/form-document|{doc_id}")
    qr_id = found["entry"][0]["resource"]["id"]
    r = fhir.get(f"QuestionnaireResponse/{qr_id}/$export-form")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/xml")
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=True)
    sent = etree.fromstring(body, parser)
    back = etree.fromstring(r.content, parser)
    assert etree.tostring(sent, method="c14n") == etree.tostring(back, method="c14n")


@pytest.fixture(params=["sqlite", "postgresql"])
def own_server(request, tmp_path):
    """A server of this test's own: it stores a duplicate provider that would disturb the
    conditional creates of other tests on the shared server."""
    if request.param == "postgresql":
        require_postgres()
        with postgres_database() as url, running_server(url) as base:
            yield Fhir(base)
        return
    with running_server(f"sqlite:///{tmp_path / 'adapter.sqlite3'}") as base:
        yield Fhir(base)


def test_notification_names_a_provider_that_a_partner_stored_twice(own_server):
    # A partner loaded its own copies of the trust the notification names: two Organizations with
    # one ODS code. The notification's conditional create would match many (412 by FHIR's rules)
    # and the child would not be notified; it refers to one of the copies instead.
    fhir = own_server
    body, number, _ = notification_for_new_child()
    for n in (1, 2):
        fhir.create({"resourceType": "Organization", "active": True, "name": f"Copy {n}",
                     "identifier": [{"system": ODS, "value": "RDY"}]})
    before = {e["resource"]["id"] for e in fhir.search("Organization", identifier=f"{ODS}|RDY")["entry"]}
    r = fhir.http.post(fhir.url("$la-notification"), data=body, headers=XML)
    assert r.status_code == 201, r.text
    [child] = fhir.search("Patient", identifier=f"{NHS}|{number}")["entry"]
    [task] = fhir.search("Task", patient=f"Patient/{child['resource']['id']}")["entry"]
    assert task["resource"]["requester"]["reference"] == f"Organization/{min(before)}"  # the trust asking
    after = {e["resource"]["id"] for e in fhir.search("Organization", identifier=f"{ODS}|RDY")["entry"]}
    assert after == before  # no third copy
