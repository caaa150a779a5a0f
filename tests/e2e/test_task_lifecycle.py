"""The assessment Task's lifecycle over HTTP: FHIR state machine, outputs, step history."""

from __future__ import annotations

from tests.support.data import patient

ASSESSMENT = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-assessment-type"


def assessment_task(patient_ref: str) -> dict:
    return {"resourceType": "Task", "status": "requested", "intent": "order",
            "code": {"coding": [{"system": ASSESSMENT, "code": "rha"}]},
            "for": {"reference": patient_ref}, "authoredOn": "2026-11-02T09:00:00Z"}


def step(fhir, task: dict, status: str, **extra) -> tuple[int, dict]:
    body = dict(task, status=status, **extra)
    r = fhir.put(f"Task/{task['id']}", body)
    return r.status_code, r.json()


def test_invalid_step_is_refused_and_valid_steps_are_kept_in_history(fhir, tag):
    p = fhir.create(patient(tag))
    task = fhir.create(assessment_task(f"Patient/{p['id']}"))
    status, body = step(fhir, task, "completed")
    assert status == 422
    assert "from 'requested' to 'completed'" in body["issue"][0]["diagnostics"]
    for s in ("received", "accepted", "in-progress"):
        status, task = step(fhir, task, s)
        assert status == 200, task
    history = fhir.get(f"Task/{task['id']}/_history").json()
    statuses = [e["resource"]["status"] for e in reversed(history["entry"])]
    assert statuses == ["requested", "received", "accepted", "in-progress"]
    stamps = [e["response"]["lastModified"] for e in reversed(history["entry"])]
    assert stamps == sorted(stamps)


def test_completion_needs_a_completed_response_and_a_plan(fhir, tag):
    p = fhir.create(patient(tag))
    task = fhir.create(assessment_task(f"Patient/{p['id']}") | {"status": "in-progress"})
    status, body = step(fhir, task, "completed")
    assert status == 422 and "QuestionnaireResponse and CarePlan missing" in body["issue"][0]["diagnostics"]
    draft = fhir.create({"resourceType": "QuestionnaireResponse", "status": "in-progress",
                         "subject": {"reference": f"Patient/{p['id']}"}})
    plan = fhir.create({"resourceType": "CarePlan", "status": "active", "intent": "plan",
                        "subject": {"reference": f"Patient/{p['id']}"}})
    outputs = [{"type": {"text": "assessment"}, "valueReference": {"reference": f"QuestionnaireResponse/{draft['id']}"}},
               {"type": {"text": "health plan"}, "valueReference": {"reference": f"CarePlan/{plan['id']}"}}]
    status, body = step(fhir, task, "completed", output=outputs)
    assert status == 422 and "not completed" in body["issue"][0]["diagnostics"]
    fhir.put(f"QuestionnaireResponse/{draft['id']}", dict(draft, status="completed"))
    status, body = step(fhir, task, "completed", output=outputs)
    assert status == 200, body
