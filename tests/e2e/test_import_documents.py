"""Partner documents over HTTP: a form XML imported, kept, traced, and never twice."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

from tests.support.data import NHS, nhs_number, patient

ROOT = Path(__file__).resolve().parents[2]
XML = {"Content-Type": "application/xml"}


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
