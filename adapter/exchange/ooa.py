"""Out-of-area assessment requests between two adapters, both directions (on_write interceptors).

`send_out_of_area` (the requesting side): an assessment Task of ours, `requested`, owned by a
partner with a FHIR endpoint, is sent to that partner as ONE transaction Bundle: the Task (our
business identifier kept, plus `requester-task` = `<our ODS>/<our Task id>`, owner and requester
as ODS logical references), its ServiceRequest, the minimum necessary Patient, the child's
active Consents and the previous health plan(s). Every entry is a conditional create on
identifiers with `urn:uuid:` links, so a re-delivery (or a replay) changes nothing.

`return_result` (the performing side): when a Task that came from a partner (it has the
`requester-task` identifier) becomes `completed`, ONE transaction Bundle goes back to the
requester: the QuestionnaireResponse and CarePlan (conditional creates; the subject a
conditional reference on the NHS number) and the requester's Task, found by its business
identifier. FHIR's state machine does not allow requested → completed, so the same Bundle walks
the requester's Task through the steps, entries applied in Bundle order (our processor runs
PUT/PATCH entries in the order given): a conditional JSON Patch to `accepted`, one to
`in-progress`, then a conditional PUT `Task?identifier=<business identifier>` of the full Task:
`completed`, outputs the urn:uuids of the QR and CarePlan (a PUT because our processor does not
rewrite urn:uuids inside a JSON Patch). One message keeps the steps atomic and in order; one
message per step could be reordered by retries with jittered backoff and be dead-lettered.
Limit: the requester's Task must still be `requested` or `accepted` (a Task the requester
moved to in-progress itself would refuse the `accepted` step with 422).

Both write the outbox row in the same database transaction as the change that caused it.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from urllib.parse import urlencode

from sqlalchemy import select

from ..fhir import jsonio
from ..fhir.errors import FhirError
from ..security.access import organisation_caller
from ..store.repository import Stored, Transaction
from ..store.tables import outbox_table as O
from . import outbox
from .partners import Registry, default_registry

ASSESSMENT_TYPES = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-assessment-type"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
NHS = "https://fhir.nhs.uk/Id/nhs-number"
REQUESTER_TASK = "https://lac-fhir-adapter.example/fhir/Id/requester-task"
PARTNER_RESOURCE = "https://lac-fhir-adapter.example/fhir/Id/partner-resource"
HEALTH_PLAN = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-care-plan-category|health-plan"
FHIR_JSON = "application/fhir+json"
REQUEST_KIND = "ooa-request"
RESULT_KIND = "ooa-result"
STEPS = ("accepted", "in-progress", "completed")


def partner_registry(router) -> Registry:
    """The partner registry: `router.partner_registry` or `router.registry` when it is one
    (tests inject it), else config/partners.toml (or ADAPTER_PARTNERS).

    `router.registry` is normally the SearchRegistry, hence the type check.
    """
    for name in ("partner_registry", "registry"):
        value = getattr(router, name, None)
        if isinstance(value, Registry):
            return value
    return default_registry()


# -- the requesting side ---------------------------------------------------------------
def send_out_of_area(router, tx: Transaction, stored: Stored, resource: dict, base: str) -> None:
    if stored.res_type != "Task" or resource.get("status") != "requested" or not _is_assessment(resource):
        return
    if _identifier(resource, REQUESTER_TASK):
        return  # a partner's request to us: never sent on
    registry = partner_registry(router)
    owner_ods = _ods_of(tx, resource.get("owner"))
    if not owner_ods or owner_ods == registry.self_ods:
        return
    partner = registry.get(owner_ods)
    if partner is None or not partner.base_url:
        return
    if _already_queued(tx, REQUEST_KIND, stored.res_id):
        return
    # What the partner receives is what it may see: the same access and consent rules as its reads.
    view = tx.as_caller(organisation_caller(partner.ods, registry, client_id=f"delivery/{partner.ods}"))
    bundle, patient_ref = request_bundle(view, router, stored.res_id, resource, registry.self_ods)
    outbox.enqueue(tx.conn, destination=partner.ods, method="POST", path="", body=jsonio.dumps(bundle),
                   content_type=FHIR_JSON, kind=REQUEST_KIND, patient=patient_ref, correlation_id=stored.res_id)


def request_bundle(tx: Transaction, router, task_id: str, task: dict, self_ods: str) -> tuple[dict, str | None]:
    """The transaction Bundle a partner receives for our Task; and the Patient reference."""
    refs: dict[str, str] = {}   # our "Type/id" -> urn:uuid in the Bundle
    entries: list[dict] = []
    patient_ref = (task.get("for") or {}).get("reference")
    patient = _read_ref(tx, patient_ref, "Patient")
    if patient is not None:
        minimal = {"resourceType": "Patient"}
        for key in ("identifier", "name", "birthDate", "gender"):
            if key in patient:
                minimal[key] = copy.deepcopy(patient[key])
        refs[patient_ref] = _urn()
        entries.append(_create(refs[patient_ref], minimal, _criteria(minimal, prefer=NHS)))
    requests = []
    for based_on in task.get("basedOn") or []:
        ref = based_on.get("reference")
        sr = _read_ref(tx, ref, "ServiceRequest")
        if sr is not None:
            refs[ref] = _urn()
            requests.append((ref, sr))
    others = []
    if patient is not None:
        for rtype, params in (("Consent", [("patient", patient_ref), ("status", "active")]),
                              ("CarePlan", [("subject", patient_ref), ("category", HEALTH_PLAN)])):
            for match in tx.search(router.parser.parse(rtype, params)).matches:
                key = f"{rtype}/{match.res_id}"
                refs[key] = _urn()
                others.append((key, match.resource()))
    for ref, sr in requests:
        body = _portable(tx, sr, refs, self_ods, ref)
        entries.append(_create(refs[ref], body, _criteria(body)))
    for key, res in others:
        body = _portable(tx, res, refs, self_ods, key)
        entries.append(_create(refs[key], body, _criteria(body)))
    copy_task = _portable(tx, task, refs, self_ods, f"Task/{task_id}", ensure=False)
    copy_task.pop("output", None)
    value = f"{self_ods}/{task_id}"
    copy_task.setdefault("identifier", []).append({"system": REQUESTER_TASK, "value": value})
    for key in ("owner", "requester"):
        ods = _ods_of(tx, task.get(key))
        if ods:
            copy_task[key] = {"identifier": {"system": ODS, "value": ods}}
    entries.append(_create(_urn(), copy_task, urlencode({"identifier": f"{REQUESTER_TASK}|{value}"})))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, patient_ref


# -- the performing side ---------------------------------------------------------------
def return_result(router, tx: Transaction, stored: Stored, resource: dict, base: str) -> None:
    if stored.res_type != "Task" or resource.get("status") != "completed":
        return
    requester_task = _identifier(resource, REQUESTER_TASK)
    if not requester_task:
        return
    registry = partner_registry(router)
    requester_ods = _ods_of(tx, resource.get("requester"))
    partner = registry.get(requester_ods) if requester_ods else None
    if partner is None or not partner.base_url or requester_ods == registry.self_ods:
        return
    if _already_queued(tx, RESULT_KIND, stored.res_id):
        return
    business = next((i for i in resource.get("identifier") or []
                     if i.get("system") not in (REQUESTER_TASK, None) and i.get("value")), None)
    if business is None:
        raise FhirError(422, "business-rule", "a Task from a partner needs its business identifier to "
                                              "return the result", ["Task.identifier"])
    bundle, patient_ref = result_bundle(tx, resource, business, registry.self_ods)
    patient_id = patient_ref.rsplit("Patient/", 1)[1] if patient_ref and "Patient/" in patient_ref else None
    if patient_id is None or not tx.sharing_permitted(patient_id):
        raise FhirError(422, "business-rule", "the assessment cannot be returned to the requester: the child's "
                                              "consent to share health information is not active here",
                        ["Task.status"])
    outbox.enqueue(tx.conn, destination=partner.ods, method="POST", path="", body=jsonio.dumps(bundle),
                   content_type=FHIR_JSON, kind=RESULT_KIND, patient=patient_ref, correlation_id=stored.res_id)


def result_bundle(tx: Transaction, task: dict, business: dict, self_ods: str) -> tuple[dict, str | None]:
    patient_ref = (task.get("for") or {}).get("reference")
    patient = _read_ref(tx, patient_ref, "Patient")
    nhs = _identifier(patient or {}, NHS)
    subject = {"reference": "Patient?" + urlencode({"identifier": f"{NHS}|{nhs}"})} if nhs else None
    refs: dict[str, str] = {}
    outputs = []
    for output in task.get("output") or []:
        ref = (output.get("valueReference") or {}).get("reference", "")
        if ref.split("/")[0] in ("QuestionnaireResponse", "CarePlan") and ref not in refs:
            refs[ref] = _urn()
            outputs.append((ref, tx.read(*ref.split("/", 1)).resource()))
    entries = []
    for ref, res in outputs:
        body = _portable(tx, res, refs, self_ods, ref)
        for key in ("subject", "source"):
            if key in body and (res.get(key) or {}).get("reference") == patient_ref:
                if subject:
                    body[key] = dict(subject)
                else:
                    body.pop(key)
        entries.append(_create(refs[ref], body, _criteria(body)))
    url = "Task?" + urlencode({"identifier": f"{business['system']}|{business['value']}"})
    for step in STEPS[:-1]:  # JSON Patch: only the status changes
        ops = [{"op": "replace", "path": "/status", "value": step}]
        binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
                  "data": base64.b64encode(json.dumps(ops).encode()).decode()}
        entries.append({"fullUrl": _urn(), "resource": binary, "request": {"method": "PATCH", "url": url}})
    entries.append({"fullUrl": _urn(), "resource": _returned_task(tx, task, refs, subject, self_ods),
                    "request": {"method": "PUT", "url": url}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, patient_ref


def _returned_task(tx: Transaction, task: dict, refs: dict[str, str], subject: dict | None, self_ods: str) -> dict:
    """The requester's Task as it will be: completed, outputs as urn:uuids of the Bundle's entries.

    A PUT replaces the whole Task, so every reference is one the requester can resolve: the
    child and the ServiceRequest as conditional references on their identifiers, the
    organisations as ODS logical references. (A JSON Patch would keep the requester's own
    references, but our transaction processor does not rewrite urn:uuids inside a patch.)
    """
    body = copy.deepcopy(task)
    body.pop("id", None)
    body.pop("text", None)
    meta = body.pop("meta", None) or {}
    if meta.get("profile"):
        body["meta"] = {"profile": meta["profile"]}
    body["identifier"] = [i for i in body.get("identifier") or [] if i.get("system") != REQUESTER_TASK]
    body["status"] = "completed"
    if subject:
        body["for"] = dict(subject)
    based_on = []
    for ref in body.get("basedOn") or []:
        sr = _read_ref(tx, ref.get("reference"), "ServiceRequest")
        criteria = _criteria(sr) if sr else None
        if criteria:
            based_on.append({"reference": "ServiceRequest?" + criteria})
    if based_on:
        body["basedOn"] = based_on
    else:
        body.pop("basedOn", None)
    for key in ("owner", "requester"):
        ods = _ods_of(tx, task.get(key))
        if ods:
            body[key] = {"identifier": {"system": ODS, "value": ods}}
    body["output"] = [dict(copy.deepcopy(o), valueReference={"reference": refs[ref]})
                      for o in task.get("output") or []
                      for ref in [(o.get("valueReference") or {}).get("reference", "")] if ref in refs]
    return _portable(tx, body, refs, self_ods, "Task", ensure=False)


# -- helpers ---------------------------------------------------------------------------
def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _is_assessment(resource: dict) -> bool:
    return any(c.get("system") == ASSESSMENT_TYPES for c in (resource.get("code") or {}).get("coding", []))


def _identifier(resource: dict, system: str) -> str | None:
    ids = resource.get("identifier")
    if isinstance(ids, dict):
        ids = [ids]
    for ident in ids or []:
        if ident.get("system") == system and ident.get("value"):
            return ident["value"]
    return None


def _read_ref(tx: Transaction, ref: str | None, rtype: str) -> dict | None:
    if not isinstance(ref, str) or not ref.startswith(rtype + "/"):
        return None
    try:
        return tx.read(rtype, ref.split("/", 1)[1]).resource()
    except FhirError:
        return None


def _ods_of(tx: Transaction, reference: dict | None) -> str | None:
    """The ODS code an Organization reference stands for (logical, or a stored Organization)."""
    if not isinstance(reference, dict):
        return None
    ident = reference.get("identifier") or {}
    if ident.get("system") == ODS and ident.get("value"):
        return ident["value"]
    org = _read_ref(tx, reference.get("reference"), "Organization")
    return _identifier(org, ODS) if org else None


def _already_queued(tx: Transaction, kind: str, correlation_id: str) -> bool:
    row = tx.conn.execute(select(O.c.id).where(O.c.kind == kind, O.c.correlation_id == correlation_id,
                                               O.c.status != outbox.CANCELLED).limit(1)).first()
    return row is not None


def _portable(tx: Transaction, resource: dict, refs: dict[str, str], self_ods: str, own_ref: str,
              ensure: bool = True) -> dict:
    """A copy fit for a partner: no id or version meta; links within the Bundle as urn:uuids,
    Organizations as ODS logical references, other local references kept as display only."""
    body = copy.deepcopy(resource)
    body.pop("id", None)
    body.pop("text", None)
    meta = body.pop("meta", None) or {}
    if meta.get("profile"):
        body["meta"] = {"profile": meta["profile"]}
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and not ref.startswith(("urn:", "#", "http")):
                if ref in refs:
                    node["reference"] = refs[ref]
                elif "?" not in ref:
                    node.pop("reference")
                    ods = _ods_of(tx, {"reference": ref}) if ref.startswith("Organization/") else None
                    if ods:
                        node["identifier"] = {"system": ODS, "value": ods}
                    elif not node.get("display"):
                        node["display"] = f"{ref} at {self_ods}"
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    if ensure and not _criteria(body):
        ident = {"system": PARTNER_RESOURCE, "value": f"{self_ods}/{own_ref}"}
        if body.get("resourceType") == "QuestionnaireResponse":
            body["identifier"] = ident  # 0..1 in R4
        else:
            body.setdefault("identifier", []).append(ident)
    return body


def _criteria(resource: dict, prefer: str | None = None) -> str | None:
    ids = resource.get("identifier")
    if isinstance(ids, dict):
        ids = [ids]
    ids = [i for i in ids or [] if i.get("system") and i.get("value")]
    if not ids:
        return None
    chosen = next((i for i in ids if i["system"] == prefer), ids[0])
    return urlencode({"identifier": f"{chosen['system']}|{chosen['value']}"})


def _create(full_url: str, resource: dict, criteria: str | None) -> dict:
    request = {"method": "POST", "url": resource["resourceType"]}
    if criteria:
        request["ifNoneExist"] = criteria
    return {"fullUrl": full_url, "resource": resource, "request": request}


def on_write(router, tx: Transaction, stored: Stored, resource: dict, base: str) -> None:
    """Both directions as one interceptor (registered once in adapter/api/app.py)."""
    from .messaging import return_message_result

    send_out_of_area(router, tx, stored, resource, base)
    return_result(router, tx, stored, resource, base)
    return_message_result(router, tx, stored, resource, base)
