"""Pathway interceptors: when an assessment is completed, the next one is planned at once.

`plan_next_assessment` is an on_write interceptor (registered in adapter/api/app.py). The
plan itself is adapter/pathway/planning.py (plain functions); this module only reads the
child and their episode and writes the ServiceRequest + Task in the same transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from ..fhir.errors import FhirError
from ..fhir.references import local_id
from ..pathway.planning import (
    ASSESSMENT_TYPES,
    SUMMARY,
    PlannedTask,
    assessment_code,
    is_care_leaver,
    is_looked_after,
    load_planning_rules,
    next_assessment,
)
from ..store.repository import Stored, Transaction
from .bundles import run_transaction
from .ingest import _now

SD = "https://lac-fhir-adapter.example/fhir/StructureDefinition/"
TASK_PROFILE = SD + "lac-assessment-task"
REQUEST_PROFILE = SD + "lac-assessment-request"
PLANNED_ID = "https://lac-fhir-adapter.example/fhir/Id/planned-assessment"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
BUSINESS_STATUS = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-task-business-status"
DELAY_REASONS = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-delay-reason"
TRIGGERS = ("iha", "rha")
DISPLAYS = {"rha": "Review health assessment", "leaving-care-summary": "Leaving-care health summary"}
# The planned Task is addressed to its provider straight away: "request-sent" ("the assessment
# has been requested from the service (or out-of-area provider) that will carry it out").
PLANNED_STATUS = ("request-sent", "Request sent")


def _search(router, tx: Transaction, rtype: str, pairs: list[tuple[str, str]]) -> list[dict]:
    return [s.resource() for s in tx.search(router.parser.parse(rtype, pairs)).matches]


def choose_episode(episodes: list[dict]) -> dict | None:
    """The active looked-after episode, else an active care-leaver one."""
    for pick in (is_looked_after, is_care_leaver):
        for episode in episodes:
            if episode.get("status") == "active" and pick(episode):
                return episode
    return None


def plan_next_assessment(router, tx: Transaction, stored: Stored, resource: dict, base: str) -> None:
    """A completed IHA/RHA Task plans the next RHA (or the leaving-care summary).

    Idempotent: the planned resources carry the identifier planned-assessment
    `<completed Task id>/next` and are POSTed with ifNoneExist on it, so completing (or
    re-saving) the same Task again plans nothing twice.
    """
    if stored.res_type != "Task" or resource.get("status") != "completed":
        return
    if assessment_code(resource) not in TRIGGERS:
        return
    patient_id = local_id((resource.get("for") or {}).get("reference"), "Patient")
    if patient_id is None:
        return
    try:
        patient = tx.read("Patient", patient_id).resource()
    except FhirError:
        return
    patient_ref = f"Patient/{patient_id}"
    episode = choose_episode(_search(router, tx, "EpisodeOfCare", [("patient", patient_ref), ("status", "active")]))
    summary_exists = bool(_search(router, tx, "Task", [("subject", patient_ref),
                                                       ("code", f"{ASSESSMENT_TYPES}|{SUMMARY}")]))
    today = datetime.now(timezone.utc).date()
    rules = load_planning_rules()
    plan = next_assessment(patient, episode, resource, today, rules, summary_exists=summary_exists)
    if plan is None:
        return
    known = known_organisations(router, tx, plan.route.ods or rules.routing.unrouted_owner_ods,
                                rules.routing.home_service_ods)
    bundle = planned_bundle(plan, rules, stored.res_id, resource, patient_ref,
                            f"EpisodeOfCare/{episode['id']}" if episode and episode.get("id") else None, known)
    run_transaction(router, tx, bundle, base)


def known_organisations(router, tx: Transaction, *codes: str) -> dict[str, str]:
    """{ODS code: id} of stored Organizations with these codes. A code held by several
    Organizations (a partner loaded its own copy) is referenced, not conditionally created: an
    If-None-Exist matching many is 412 by the FHIR rules, which would fail the whole write."""
    found: dict[str, str] = {}
    for code in sorted(set(codes)):
        matches = tx.search(router.parser.parse("Organization", [("identifier", f"{ODS}|{code}")])).matches
        if matches:
            found[code] = min(m.res_id for m in matches)
    return found


def _organisation_entry(ods: str, name: str | None, known: dict[str, str]) -> tuple[str, dict | None]:
    """A reference to the Organization with this ODS code, and the entry creating it if needed."""
    if ods in known:
        return f"Organization/{known[ods]}", None
    full_url = f"urn:uuid:{uuid.uuid4()}"
    org = {"resourceType": "Organization", "identifier": [{"system": ODS, "value": ods}], "active": True,
           "name": name or f"ODS {ods}"}
    return full_url, {"fullUrl": full_url, "resource": org,
                      "request": {"method": "POST", "url": "Organization",
                                  "ifNoneExist": f"identifier={ODS}|{ods}"}}


def planned_bundle(plan: PlannedTask, rules, completed_id: str, completed: dict, patient_ref: str,
                   episode_ref: str | None, known: dict[str, str]) -> dict:
    """The transaction Bundle: owner (and requester) Organizations unless `known`, ServiceRequest, Task."""
    routing = rules.routing
    entries: list[dict] = []
    owner_ods = plan.route.ods or routing.unrouted_owner_ods
    owner_ref, owner_entry = _organisation_entry(owner_ods, routing.names.get(owner_ods), known)
    entries += [owner_entry] if owner_entry else []
    requester = completed.get("requester")
    if not (isinstance(requester, dict) and (requester.get("reference") or requester.get("identifier"))):
        home = routing.home_service_ods
        if home == owner_ods:
            requester = {"reference": owner_ref}
        else:
            home_ref, home_entry = _organisation_entry(home, routing.names.get(home), known)
            entries += [home_entry] if home_entry else []
            requester = {"reference": home_ref}
    requester = {k: v for k, v in requester.items() if k in ("reference", "identifier", "display", "type")}
    value = f"{completed_id}/next"
    identifier = [{"system": PLANNED_ID, "value": value}]
    if_none = f"identifier={PLANNED_ID}|{value}"
    code = {"coding": [{"system": ASSESSMENT_TYPES, "code": plan.assessment,
                        "display": DISPLAYS.get(plan.assessment, plan.assessment)}]}
    now = _now()
    due = plan.due.isoformat()
    request_url = f"urn:uuid:{uuid.uuid4()}"
    supporting = [{"reference": f"Task/{completed_id}"}] + ([{"reference": episode_ref}] if episode_ref else [])
    entries.append({"fullUrl": request_url, "request": {"method": "POST", "url": "ServiceRequest", "ifNoneExist": if_none},
                    "resource": {"resourceType": "ServiceRequest", "meta": {"profile": [REQUEST_PROFILE]},
                                 "identifier": identifier, "status": "active", "intent": "order", "code": code,
                                 "subject": {"reference": patient_ref}, "occurrencePeriod": {"end": due},
                                 "authoredOn": now, "requester": requester, "performer": [{"reference": owner_ref}],
                                 "supportingInfo": supporting}})
    task = {"resourceType": "Task", "meta": {"profile": [TASK_PROFILE]}, "identifier": identifier,
            "basedOn": [{"reference": request_url}], "status": "requested", "intent": "order", "code": code,
            "for": {"reference": patient_ref}, "authoredOn": now, "requester": requester,
            "owner": {"reference": owner_ref}, "restriction": {"period": {"end": due}},
            "note": [{"text": f"Planned on completion of Task/{completed_id}: {plan.basis}; routing: {plan.route.reason}"}]}
    if plan.route.routed:
        task["businessStatus"] = {"coding": [{"system": BUSINESS_STATUS, "code": PLANNED_STATUS[0],
                                              "display": PLANNED_STATUS[1]}]}
    else:
        task["statusReason"] = {"coding": [{"system": DELAY_REASONS, "code": routing.unrouted_reason_code}],
                                "text": f"{routing.unrouted_reason_text} ({plan.route.reason})"}
    entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": task,
                    "request": {"method": "POST", "url": "Task", "ifNoneExist": if_none}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def reroute_on_placement_change(router, tx: Transaction, stored: Stored, resource: dict, base: str) -> None:
    """A child who moves: open RHA requests go to the provider of the new placement area.

    Only Tasks not yet taken up (status requested) are moved; one already accepted stays
    with the provider doing it. A move to a partner's area sends the request on at once
    (the out-of-area interceptor sees the Task's new owner).
    """
    from ..pathway.planning import placement
    from ..pathway.routing import provider_for

    if stored.res_type != "EpisodeOfCare" or stored.version_id < 2 or not is_looked_after(resource):
        return
    before = tx.vread("EpisodeOfCare", stored.res_id, str(stored.version_id - 1)).resource()
    now_at = placement(resource)
    if placement(before) == now_at:
        return
    patient_ref = (resource.get("patient") or {}).get("reference")
    if not patient_ref:
        return
    rules = load_planning_rules()
    route = provider_for("rha", now_at[0], now_at[1], rules.routing)
    owner_ods = route.ods or rules.routing.unrouted_owner_ods
    query = router.parser.parse("Task", [("patient", patient_ref), ("status", "requested"),
                                         ("code", f"{ASSESSMENT_TYPES}|rha")])
    for task_row in tx.search(query).matches:
        task = task_row.resource()
        if _owner_ods(tx, task) == owner_ods:
            continue
        org_url, org_entry = _organisation_entry(owner_ods, rules.routing.names.get(owner_ods),
                                                 known_organisations(router, tx, owner_ods))
        task["owner"] = {"reference": org_url}
        task.setdefault("note", []).append({"text": f"Re-routed after a placement change: {route.reason}"})
        entries = ([org_entry] if org_entry else []) + [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": task,
                               "request": {"method": "PUT", "url": f"Task/{task_row.res_id}",
                                           "ifMatch": f'W/"{task_row.version_id}"'}}]
        run_transaction(router, tx, {"resourceType": "Bundle", "type": "transaction", "entry": entries}, base)


def _owner_ods(tx: Transaction, task: dict) -> str | None:
    owner = task.get("owner") or {}
    ident = owner.get("identifier") or {}
    if ident.get("system") == ODS:
        return ident.get("value")
    org_id = local_id(owner.get("reference"), "Organization")
    if not org_id:
        return None
    try:
        org = tx.read("Organization", org_id).resource()
    except FhirError:
        return None
    return next((i.get("value") for i in org.get("identifier", []) if i.get("system") == ODS), None)
