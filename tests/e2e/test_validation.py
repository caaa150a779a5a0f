"""Validation over HTTP: published conformance resources, $validate, 422 on invalid writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.data import NHS

ROOT = Path(__file__).resolve().parents[2]
FORMS = ROOT / "fixtures" / "forms"
FORM_IDS = ["lac-consent", "iha-c", "iha-yp", "rha-c", "rha-yp", "cr-c", "cr-yp"]
BASE = "https://lac-fhir-adapter.example/fhir"


def load(name: str) -> dict:
    return json.loads((FORMS / name).read_text())


def errors(outcome: dict) -> list[dict]:
    return [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]


def lac_patient(nhs: str) -> dict:
    return {"resourceType": "Patient", "meta": {"profile": [f"{BASE}/StructureDefinition/lac-patient"]},
            "identifier": [{"system": NHS, "value": nhs}], "name": [{"family": "Profiled", "given": ["Kai"]}],
            "birthDate": "2014-02-03"}


def test_published_conformance_resources_are_readable_by_url_and_version(fhir):
    for rtype, rid in (("Questionnaire", "iha-c"), ("ValueSet", "ssda903-legal-status"),
                       ("StructureDefinition", "lac-patient"), ("CodeSystem", "lac-delay-reason")):
        found = fhir.search(rtype, url=f"{BASE}/{rtype}/{rid}", version="1.0.0")
        assert found["total"] == 1, (rtype, rid)
        assert fhir.get(f"{rtype}/{rid}").json()["url"] == f"{BASE}/{rtype}/{rid}"


@pytest.mark.parametrize("form", FORM_IDS)
def test_worked_examples_validate_clean_and_broken_twins_fail_as_expected(fhir, form):
    completed = load(f"{form}-completed.json")
    r = fhir.post("QuestionnaireResponse/$validate", completed)
    assert r.status_code == 200
    assert errors(r.json()) == [], errors(r.json())[:3]
    broken = fhir.post("QuestionnaireResponse/$validate", load(f"{form}-broken.json")).json()
    expected = load(f"{form}-broken.expected.json")
    got = sorted((i["severity"], i["expression"][0]) for i in errors(broken))
    assert got == sorted((e["severity"], e["expression"]) for e in expected)


def test_invalid_response_is_refused_with_422_and_valid_one_stored(fhir):
    completed = load("iha-c-completed.json")
    completed.pop("id")
    assert fhir.post("QuestionnaireResponse", completed).status_code == 201
    broken = load("iha-c-broken.json")
    broken.pop("id")
    r = fhir.post("QuestionnaireResponse", broken)
    assert r.status_code == 422
    expressions = {e for i in errors(r.json()) for e in i.get("expression", [])}
    assert {e["expression"] for e in load("iha-c-broken.expected.json")} <= expressions


def test_in_progress_response_may_be_incomplete(fhir):
    partial = load("iha-c-completed.json")
    partial.pop("id")
    partial["status"] = "in-progress"
    partial["item"] = partial["item"][:1]
    assert fhir.post("QuestionnaireResponse", partial).status_code == 201


def test_unknown_questionnaire_of_ours_is_an_error(fhir):
    response = {"resourceType": "QuestionnaireResponse", "status": "completed",
                "questionnaire": f"{BASE}/Questionnaire/no-such-form|1.0.0"}
    r = fhir.post("QuestionnaireResponse", response)
    assert r.status_code == 422
    assert "no-such-form" in r.json()["issue"][0]["diagnostics"]


def test_profiled_patient_nhs_number_check(fhir):
    assert fhir.post("Patient", lac_patient("9990000034")).status_code == 201
    r = fhir.post("Patient", lac_patient("9990000035"))
    assert r.status_code == 422
    invariant = [i for i in errors(r.json()) if i["code"] == "invariant"]
    assert invariant and "identifier" in invariant[0]["expression"][0]


def test_validate_with_parameters_profile_and_instance_level(fhir):
    plain = {"resourceType": "Patient", "name": [{"family": "Unprofiled"}]}
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": plain},
        {"name": "profile", "valueUri": f"{BASE}/StructureDefinition/lac-patient"}]}
    outcome = fhir.post("Patient/$validate", params).json()
    assert errors(outcome), "lac-patient needs an identifier and a birth date"
    stored = fhir.create(plain)
    ok = fhir.get(f"Patient/{stored['id']}/$validate").json()
    assert errors(ok) == []
    profiled = fhir.get(f"Patient/{stored['id']}/$validate",
                        params={"profile": f"{BASE}/StructureDefinition/lac-patient"}).json()
    assert errors(profiled)
    unknown = fhir.post("Patient/$validate", plain, params={"profile": f"{BASE}/StructureDefinition/nope"})
    assert errors(unknown.json())


def test_capability_statement_advertises_validate(fhir):
    cs = fhir.get("metadata").json()
    ops = {o["name"] for o in cs["rest"][0].get("operation", [])}
    assert "validate" in ops
