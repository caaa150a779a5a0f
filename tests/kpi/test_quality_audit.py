"""The automated quality audit of a completed assessment: the checklist as data, applied on
submit, stored as a scored Observation, with a Task to fix what fails (both backends)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from adapter.kpi.quality import AUDIT_ID, audit
from tests.support.data import worked_example

ROOT = Path(__file__).resolve().parents[2]
FORMS = ("iha-c", "iha-yp", "rha-c", "rha-yp")


completed = worked_example


def without(response: dict, *link_ids: str) -> dict:
    """The response with the answers to these items removed, wherever they are."""
    out = copy.deepcopy(response)

    def walk(items):
        for item in items:
            if item.get("linkId") in link_ids:
                item.pop("answer", None)
            walk(item.get("item") or [])
            for answer in item.get("answer") or []:
                walk(answer.get("item") or [])
    walk(out["item"])
    return out


@pytest.mark.parametrize("form", FORMS)
def test_the_worked_examples_pass(form):
    result = audit(completed(form))
    assert result.score == 100 and result.passed and not result.failures


def test_each_missing_element_is_named():
    result = audit(without(completed("iha-yp"), "partB.views.child", "partB.wishesAndFeelings",
                           "partC.plan.dueDate", "partA.consent.sharingRecorded"))
    failed = {c.code: why for c, why in result.failures}
    assert set(failed) == {"child-voice-recorded", "plan-actions-owned-and-dated", "consent-recorded"}
    assert "partC.plan.dueDate" in failed["plan-actions-owned-and-dated"]
    assert "partA.consent.sharingRecorded" in failed["consent-recorded"]
    assert result.score == 50 and not result.passed
    # the SDQ check passes with a reason for having no score (an infant: SDQ1)
    infant = without(completed("iha-c"), "partB.emotional.sdqTotal")
    assert "sdq-considered" not in {c.code for c, _ in audit(infant).failures}


def audits(fhir, response_id: str) -> list[dict]:
    found = fhir.search("Observation", identifier=f"{AUDIT_ID}|QuestionnaireResponse/{response_id}")
    return [e["resource"] for e in found.get("entry", [])]


def fixes(fhir, response_id: str) -> list[dict]:
    found = fhir.search("Task", identifier=f"{AUDIT_ID}|fix/QuestionnaireResponse/{response_id}")
    return [e["resource"] for e in found.get("entry", [])]


def test_submitting_stores_the_score_and_work_to_fix_then_the_fix_closes_it(fhir):
    response = without(completed("rha-yp"), "partB.views.child", "partB.wishesAndFeelings")
    created = fhir.post("QuestionnaireResponse", response)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    [result] = audits(fhir, rid)
    assert result["valueQuantity"]["value"] == 83 and result["interpretation"][0]["text"] == "failed"
    assert result["focus"][0]["reference"] == f"QuestionnaireResponse/{rid}"
    voice = next(c for c in result["component"] if c["code"]["coding"][0]["code"] == "child-voice-recorded")
    assert voice["valueBoolean"] is False
    [fix] = fixes(fhir, rid)
    assert fix["status"] == "requested" and "child's own views" in fix["description"]
    assert fix["focus"]["reference"] == f"QuestionnaireResponse/{rid}"
    # the provider amends the assessment: the audit is updated, the work to fix is done
    amended = dict(completed("rha-yp"), id=rid, status="amended", identifier=created.json()["identifier"])
    assert fhir.put(f"QuestionnaireResponse/{rid}", amended).status_code == 200
    [result] = audits(fhir, rid)
    assert result["valueQuantity"]["value"] == 100 and result["interpretation"][0]["text"] == "passed"
    [fix] = fixes(fhir, rid)
    assert fix["status"] == "completed"


def test_a_passing_submission_has_no_work_to_fix_and_drafts_are_not_audited(fhir):
    rid = fhir.create(completed("iha-c"))["id"]
    assert [r["valueQuantity"]["value"] for r in audits(fhir, rid)] == [100]
    assert fixes(fhir, rid) == []
    draft = fhir.create(dict(completed("iha-yp"), status="in-progress"))
    assert audits(fhir, draft["id"]) == []
