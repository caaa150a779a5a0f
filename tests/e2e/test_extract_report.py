"""Submitting a completed assessment extracts its findings; $extract and $report over HTTP."""

from __future__ import annotations

from pathlib import Path

import lxml.html

from tests.support.data import worked_example

ROOT = Path(__file__).resolve().parents[2]




def test_completed_submission_writes_observations_plans_and_provenance(fhir):
    created = fhir.post("QuestionnaireResponse", worked_example("iha-c"))
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    observations = fhir.search("Observation", **{"derived-from": f"QuestionnaireResponse/{rid}"})
    assert observations["total"] == 10
    provenance = fhir.search("Provenance", entity=f"QuestionnaireResponse/{rid}")
    assert provenance["total"] == 1
    targets = [t["reference"] for t in provenance["entry"][0]["resource"]["target"]]
    assert sum(t.startswith("CarePlan/") for t in targets) == 3
    # submitting it again (an amendment with the same answers) adds nothing
    again = fhir.put(f"QuestionnaireResponse/{rid}", dict(created.json(), status="amended"))
    assert again.status_code == 200
    assert fhir.search("Observation", **{"derived-from": f"QuestionnaireResponse/{rid}"})["total"] == 10


def test_in_progress_submission_extracts_nothing(fhir):
    draft = worked_example("iha-yp") | {"status": "in-progress"}
    rid = fhir.post("QuestionnaireResponse", draft).json()["id"]
    assert fhir.search("Observation", **{"derived-from": f"QuestionnaireResponse/{rid}"})["total"] == 0


def test_extract_operation_returns_a_transaction_bundle_without_writing(fhir):
    response = worked_example("lac-consent")
    before = fhir.search("Consent", _summary="count")["total"]
    r = fhir.post("QuestionnaireResponse/$extract", response)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "transaction"
    consents = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Consent"]
    assert sorted(c["provision"]["type"] for c in consents) == ["deny", "permit"]
    assert fhir.search("Consent", _summary="count")["total"] == before


def test_report_is_printable_html_with_the_plan(fhir):
    rid = fhir.post("QuestionnaireResponse", worked_example("rha-c")).json()["id"]
    r = fhir.get(f"QuestionnaireResponse/{rid}/$report")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    page = lxml.html.fromstring(r.content)
    assert page.findall(".//table")
    assert "@media print" in r.text
    assert fhir.get("QuestionnaireResponse/nope/$report").status_code == 404
