"""Bad input gets a precise OperationOutcome with the right status, and writes nothing."""

from __future__ import annotations

import pytest

from tests.support.auth import admin_session
from tests.support.data import patient
from tests.support.server import running_server

ADMIN_HTTP = admin_session()


def outcome(r) -> str:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]["diagnostics"]


def test_malformed_json_names_line_and_column(fhir):
    r = fhir.http.post(fhir.url("Patient"), data=b'{"resourceType": "Patient",\n "gender": }',
                       headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 400
    assert "line 2" in outcome(r)


def test_invalid_resource_names_the_element(fhir, tag):
    body = patient(tag)
    body["birthDate"] = "2020-13-45"
    body["name"][0]["given"] = "not-a-list"
    r = fhir.post("Patient", body)
    assert r.status_code == 422
    expressions = {e for issue in r.json()["issue"] for e in issue.get("expression", [])}
    assert "Patient.birthDate" in expressions and "Patient.name[0].given" in expressions
    assert fhir.search("Patient", _tag=tag)["total"] == 0


def test_unknown_element_is_rejected(fhir, tag):
    r = fhir.post("Patient", patient(tag) | {"favouriteColour": "blue"})
    assert r.status_code == 422
    assert "favouriteColour" in outcome(r)


def test_type_mismatch_and_unknown_type(fhir, tag):
    r = fhir.post("Observation", patient(tag))
    assert r.status_code == 400 and "Patient" in outcome(r)
    assert fhir.get("Spaceship/1").status_code == 404
    assert fhir.get("Patient/does-not-exist").status_code == 404


def test_method_not_allowed(fhir):
    assert fhir.http.delete(fhir.url("metadata")).status_code == 405
    assert fhir.http.put(fhir.url("Patient/1/_history")).status_code == 405


def test_unsupported_media_type(fhir):
    r = fhir.http.post(fhir.url("Patient"), data=b"name=x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert outcome(r)


def test_deeply_nested_json_is_refused(fhir):
    deep = b'{"resourceType":"Patient","extension":' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = fhir.http.post(fhir.url("Patient"), data=deep, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 400
    assert "nesting" in outcome(r)


def test_not_a_json_object(fhir):
    r = fhir.http.post(fhir.url("Patient"), data=b"[1,2]", headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 400


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('small') / 'a.sqlite3'}"
    with running_server(url, max_body_bytes=2048) as base:
        yield base


def test_oversized_body_is_413(small_server):

    body = patient("big") | {"text": {"status": "generated",
                                      "div": '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * 5000 + "</div>"}}
    r = ADMIN_HTTP.post(f"{small_server}/Patient", json=body, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 413
    assert "2048" in outcome(r)


def test_capability_statement_lists_what_is_implemented(fhir):
    r = fhir.get("metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    types = {res["type"]: res for res in cs["rest"][0]["resource"]}
    for needed in ("Patient", "Task", "Consent", "QuestionnaireResponse", "CarePlan", "Subscription"):
        assert needed in types
    names = {p["name"] for p in types["Task"]["searchParam"]}
    assert {"patient", "status", "_id", "_lastUpdated"} <= names
    assert "application/fhir+xml" in cs["format"]
