"""Rules that run on every write, registered once on the router (HAPI's interceptor idea)."""

from __future__ import annotations

import uuid

from ..consent import rules as consent_rules
from ..fhir.errors import FhirError
from ..pathway.tasks import missing_outputs, output_references, transition_problem
from ..store.access_sql import child_records
from ..store.repository import Stored, Transaction
from .bundles import run_transaction
from .ingest import _now

EXTRACT_ON = ("completed", "amended")
CONSENT_PROFILE = "https://lac-fhir-adapter.example/fhir/StructureDefinition/lac-consent"
ASSESSMENT_TYPES = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-assessment-type"


def task_lifecycle(router, tx: Transaction, rtype: str, current: Stored | None, resource: dict) -> None:
    """Task status changes follow FHIR's state machine; a completed assessment has its outputs.

    The outputs must be stored: the completed QuestionnaireResponse and the health plan.
    """
    if rtype != "Task":
        return
    old = current.resource().get("status") if current is not None else None
    new = resource.get("status")
    problem = transition_problem(old, new)
    if problem:
        raise FhirError(422, "business-rule", problem, ["Task.status"])
    is_assessment = any(c.get("system") == ASSESSMENT_TYPES
                        for c in (resource.get("code") or {}).get("coding", []))
    if new != "completed" or old == "completed" or not is_assessment:
        return
    lacking = missing_outputs(resource)
    if lacking:
        raise FhirError(422, "business-rule", f"a completed assessment Task needs its outputs: "
                                              f"{' and '.join(lacking)} missing in Task.output", ["Task.output"])
    for ref in output_references(resource):
        out_type, _, out_id = ref.rpartition("/")
        out_type = out_type.rsplit("/", 1)[-1]
        if out_type not in ("QuestionnaireResponse", "CarePlan"):
            continue
        try:
            output = tx.read(out_type, out_id).resource()
        except FhirError:
            raise FhirError(422, "business-rule", f"Task.output {ref} is not a stored resource",
                            ["Task.output"]) from None
        if out_type == "QuestionnaireResponse" and output.get("status") not in ("completed", "amended"):
            raise FhirError(422, "business-rule", f"Task.output {ref} is '{output.get('status')}', not completed",
                            ["Task.output"])


def consent_grantor(router, tx: Transaction, rtype: str, current: Stored | None, resource: dict) -> None:
    """A pathway Consent (our profile, or one naming its grantor) must come from someone who
    can give it, by the rules of config/consent.toml; else it is refused as invalid."""
    if rtype != "Consent":
        return
    profiles = (resource.get("meta") or {}).get("profile") or []
    names_grantor = any(isinstance(e, dict) and e.get("url") == consent_rules.GRANTOR_URL
                        for e in resource.get("extension") or [])
    if CONSENT_PROFILE not in profiles and not names_grantor:
        return
    ref = (resource.get("patient") or {}).get("reference") or ""
    patient_id = ref.rsplit("Patient/", 1)[1] if "Patient/" in ref else None
    patient, episodes = child_records(tx.conn, patient_id) if patient_id else ({}, [])
    problems = consent_rules.grantor_problems(resource, consent_rules.child_facts_from(patient, episodes))
    if problems:
        raise FhirError(422, "business-rule", "the Consent is invalid: " + "; ".join(m for _, m in problems),
                        [where for where, _ in problems])


def extract_on_submit(router, tx: Transaction, stored: Stored, resource: dict, base: str) -> None:
    """A completed assessment yields its Observations, health plan and consents at once.

    The extracted resources are written in the submitting transaction, with a Provenance
    from them to the response; their identifiers make a re-submission add nothing.
    """
    if stored.res_type != "QuestionnaireResponse" or resource.get("status") not in EXTRACT_ON:
        return
    canonical = resource.get("questionnaire")
    questionnaire = router.resolver(tx)("Questionnaire", canonical) if canonical else None
    if questionnaire is None:
        return
    from ..mapping.extract import extract

    response_ref = f"QuestionnaireResponse/{stored.res_id}"
    bundle = extract(resource, questionnaire, response_ref)
    entries = bundle.get("entry") or []
    if not entries:
        return
    targets = [e["fullUrl"] for e in entries if e.get("fullUrl")]
    entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "request": {"method": "POST", "url": "Provenance"},
                    "resource": {"resourceType": "Provenance", "target": [{"reference": t} for t in targets],
                                 "recorded": _now(),
                                 "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                                          "code": "TRANSFORM", "display": "transform"}]},
                                 "agent": [{"who": {"display": "lac-fhir-adapter $extract"}}],
                                 "entity": [{"role": "source", "what": {"reference": response_ref}}]}})
    run_transaction(router, tx, {"resourceType": "Bundle", "type": "transaction", "entry": entries}, base)


def quality_audit_on_submit(router, tx: Transaction, stored: Stored, resource: dict, base: str) -> None:
    """A completed health assessment is audited against the checklist (config/quality-audit.toml)
    in the submitting transaction: the result is stored as an Observation (one per response,
    updated when it is amended) and, when a check fails, a Task for the assessing service lists
    what to fix (one per response; completed by the next audit that passes)."""
    from ..kpi import quality

    if stored.res_type != "QuestionnaireResponse" or not quality.applies(resource):
        return
    result = quality.audit(resource)
    response_ref = f"QuestionnaireResponse/{stored.res_id}"
    when = _now()
    ident = f"identifier={quality.AUDIT_ID}|"
    entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": quality.audit_observation(response_ref, resource, result, when),
                "request": {"method": "PUT", "url": f"Observation?{ident}{response_ref}"}}]
    found = tx.find(router.criteria("Task", f"{ident}fix/{response_ref}"), limit=1)
    fix = found[0].resource() if found else None
    status = (fix or {}).get("status")
    if result.failures and status not in ("completed", "cancelled", "failed"):
        task = quality.fix_task(response_ref, resource, result, when)
        task["status"] = status or "requested"  # an open fix keeps its progress; its list is brought up to date
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": task,
                        "request": {"method": "PUT", "url": f"Task?{ident}fix/{response_ref}"}})
    elif not result.failures and status in ("requested", "received", "accepted", "in-progress"):
        fix.pop("meta", None)
        for step in _steps_to_completed(fix, status):
            entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": step,
                            "request": {"method": "PUT", "url": f"Task/{found[0].res_id}"}})
    _write_audit(router, tx, entries, base)


def _write_audit(router, tx: Transaction, entries: list[dict], base: str) -> None:
    run_transaction(router, tx, {"resourceType": "Bundle", "type": "transaction", "entry": entries}, base)


def _steps_to_completed(task: dict, status: str | None) -> list[dict]:
    """FHIR's Task state machine reaches completed through in-progress."""
    path = {"requested": ["accepted", "in-progress", "completed"], "received": ["accepted", "in-progress", "completed"],
            "accepted": ["in-progress", "completed"], "in-progress": ["completed"]}.get(status or "", ["completed"])
    return [dict(task, status=s) for s in path]
