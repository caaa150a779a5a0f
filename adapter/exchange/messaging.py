"""`POST [base]/$process-message`: BaRS-style referral messages into our Task workflow.

A `Bundle.type = message` whose first entry is a MessageHeader (event
`https://fhir.nhs.uk/CodeSystem/message-events-bars|servicerequest-request`) with its focus on a
ServiceRequest in the Bundle. Every resource of the message except the header is stored in the
request's transaction (conditional creates on identifiers: the Patient on its NHS number), and
an assessment Task is created: status requested, owner our registry's ODS, requester the
sender's ODS. BaRS has no Task; the Task is this project's workflow.

The sender is who the access token says: a MessageHeader.sender other than the token's
organisation is refused (403). The Task carries the request message's id
(`bars-message` = `<sender ODS>/<message id>`); when it is completed, `return_message_result`
sends the sender a response message with the completed Task, the assessment and the health plan.

A message is processed once: the answer is remembered in the inbound table under the sender
(its source endpoint, else its ODS) and the MessageHeader id, so a repeat gets the same answer.
The answer is a message Bundle: a MessageHeader with `response.identifier` = the request's
header id, `response.code` = ok, and focus on the created Task (included).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from urllib.parse import urlencode

from sqlalchemy import select

from ..fhir.errors import FhirError, bad_request
from ..rest import inbound
from ..rest.bundles import run_transaction
from ..rest.messages import FhirRequest, FhirResponse
from ..store.repository import Transaction
from ..store.tables import outbox_table as O
from .ooa import ASSESSMENT_TYPES, NHS, ODS, partner_registry

BARS_EVENTS = "https://fhir.nhs.uk/CodeSystem/message-events-bars"
SUPPORTED_EVENTS = ("servicerequest-request",)
MESSAGE_ID = "https://lac-fhir-adapter.example/fhir/Id/bars-message"
ODS_SPELLINGS = (ODS, "https://fhir.nhs.uk/id/ods-organization-code")


def process_message(router, tx: Transaction, req: FhirRequest, base: str, target: list[str]) -> FhirResponse:
    if req.method != "POST":
        raise FhirError(405, "not-supported", "$process-message takes a POST of a message Bundle")
    if target:
        raise bad_request("$process-message is a system-level operation: POST [base]/$process-message")
    message = _checked(req.body)
    caller = tx.caller
    if not caller.unrestricted and message["sender_ods"] != caller.organisation:
        raise FhirError(403, "forbidden", f"MessageHeader.sender is {message['sender_ods']}, but the access token "
                                          f"is {caller.organisation or 'no organisation'}'s: a partner sends as itself",
                        ["Bundle.entry[0].resource.sender"])
    header, focus, patient = message["header"], message["focus"], message["patient"]
    sender_key = message["source"] or message["sender_ods"]
    prior = inbound.replay(tx.conn, f"message:{sender_key}", message["id"])
    if prior is not None:
        return prior
    registry = partner_registry(router)
    entries = []
    for entry in message["entries"]:
        resource = dict(entry["resource"])
        resource.pop("id", None)
        meta = resource.pop("meta", None)
        if isinstance(meta, dict) and meta.get("profile"):
            resource["meta"] = {"profile": meta["profile"]}
        request = {"method": "POST", "url": resource["resourceType"]}
        criteria = _criteria(resource, NHS if entry["resource"] is patient else None)
        if criteria:
            request["ifNoneExist"] = criteria
        entries.append({"fullUrl": entry["fullUrl"], "resource": resource, "request": request})
    task_ids = [dict(i) for i in focus.get("identifier") or [] if i.get("system") and i.get("value")]
    # the request message, by sender and id: where the result goes back to (return_message_result)
    task_ids.append({"system": MESSAGE_ID, "value": f"{message['sender_ods']}/{message['id']}"})
    task = {"resourceType": "Task", "identifier": task_ids, "status": "requested", "intent": "order",
            "code": focus["code"], "for": {"reference": message["patient_url"]},
            "basedOn": [{"reference": message["focus_url"]}],
            "authoredOn": focus.get("authoredOn") or _now(),
            "requester": {"identifier": {"system": ODS, "value": message["sender_ods"]}},
            "owner": {"identifier": {"system": ODS, "value": registry.self_ods}}}
    end = (focus.get("occurrencePeriod") or {}).get("end")
    if end:
        task["restriction"] = {"period": {"end": end}}
    entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": task,
                    "request": {"method": "POST", "url": "Task",
                                "ifNoneExist": _criteria(task) or ""}})
    result = run_transaction(router, tx, {"resourceType": "Bundle", "type": "transaction", "entry": entries}, base)
    location = result["entry"][-1]["response"].get("location", "")
    task_id = location.split("/Task/", 1)[1].split("/", 1)[0] if "/Task/" in location else location
    stored_task = tx.read("Task", task_id).resource()
    task_url = f"{base}/Task/{task_id}"
    answer_header = {
        "resourceType": "MessageHeader", "id": str(uuid.uuid4()),
        "eventCoding": dict(header["eventCoding"]),
        "destination": [{"endpoint": message["source"] or sender_key,
                         "receiver": {"identifier": {"system": ODS, "value": message["sender_ods"]}}}],
        "sender": {"identifier": {"system": ODS, "value": registry.self_ods}},
        "source": {"endpoint": f"{base}/$process-message"},
        "response": {"identifier": header["id"], "code": "ok"},
        "focus": [{"reference": task_url}],
    }
    answer = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "message", "timestamp": _now(),
              "entry": [{"fullUrl": f"urn:uuid:{answer_header['id']}", "resource": answer_header},
                        {"fullUrl": task_url, "resource": stored_task}]}
    response = FhirResponse(200, resource=answer, headers={"Location": task_url})
    inbound.remember(tx.conn, f"message:{sender_key}", message["id"], response)
    return response


# -- the result, back to the sender -------------------------------------------------------------
RESULT_KIND = "bars-result"


def return_message_result(router, tx: Transaction, stored, resource: dict, base: str) -> None:
    """When a Task that came in by `$process-message` is completed, the sender gets a response
    message (FHIR messaging: same event, `MessageHeader.response` = its request's id, code ok)
    with the completed Task, the assessment (QuestionnaireResponse) and the health plan
    (CarePlan), POSTed to its `$process-message` through the outbox; only while the child's
    consent to share health information is active."""
    from ..fhir import jsonio
    from . import outbox

    if stored.res_type != "Task" or resource.get("status") != "completed":
        return
    origin = next((i.get("value") for i in resource.get("identifier") or []
                   if i.get("system") == MESSAGE_ID and i.get("value")), None)
    if not origin or "/" not in origin:
        return
    sender_ods, request_id = origin.split("/", 1)
    registry = partner_registry(router)
    partner = registry.get(sender_ods)
    if partner is None or not partner.base_url or sender_ods == registry.self_ods:
        return
    if tx.conn.execute(select(O.c.id).where(O.c.kind == RESULT_KIND, O.c.correlation_id == stored.res_id)).first():
        return
    patient_ref = (resource.get("for") or {}).get("reference") or ""
    patient_id = patient_ref.rsplit("Patient/", 1)[1] if "Patient/" in patient_ref else None
    if patient_id is None or not tx.sharing_permitted(patient_id):
        raise FhirError(422, "business-rule", "the assessment cannot be returned to the requester: the child's "
                                              "consent to share health information is not active here",
                        ["Task.status"])
    entries = [{"fullUrl": f"{base}/Task/{stored.res_id}", "resource": resource}]
    for output in resource.get("output") or []:
        ref = (output.get("valueReference") or {}).get("reference") or ""
        rtype, _, rid = ref.partition("/")
        if rtype in ("QuestionnaireResponse", "CarePlan") and rid:
            entries.append({"fullUrl": f"{base}/{ref}", "resource": tx.read(rtype, rid).resource()})
    patient = tx.read("Patient", patient_id).resource()
    entries.append({"fullUrl": f"{base}/Patient/{patient_id}", "resource": patient})
    header_id = str(uuid.uuid4())
    header = {"resourceType": "MessageHeader", "id": header_id,
              "eventCoding": {"system": BARS_EVENTS, "code": "servicerequest-request"},
              "destination": [{"endpoint": f"{partner.base_url}/$process-message",
                               "receiver": {"identifier": {"system": ODS, "value": sender_ods}}}],
              "sender": {"identifier": {"system": ODS, "value": registry.self_ods}},
              "source": {"endpoint": f"{base}/$process-message"},
              "response": {"identifier": request_id, "code": "ok"},
              "focus": [{"reference": f"{base}/Task/{stored.res_id}"}]}
    bundle = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "message", "timestamp": _now(),
              "entry": [{"fullUrl": f"urn:uuid:{header_id}", "resource": header}, *entries]}
    outbox.enqueue(tx.conn, destination=sender_ods, method="POST", path="$process-message",
                   body=jsonio.dumps(bundle), content_type="application/fhir+json", kind=RESULT_KIND,
                   patient=f"Patient/{patient_id}", correlation_id=stored.res_id)


def _checked(bundle) -> dict:
    """The parts of a well-formed message, or a 400 naming the element that is wrong."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("$process-message takes a Bundle", ["Bundle"])
    if bundle.get("type") != "message":
        raise bad_request(f"Bundle.type must be 'message', not {bundle.get('type')!r}", ["Bundle.type"])
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise bad_request("a message Bundle needs entries, the MessageHeader first", ["Bundle.entry"], "required")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict) or \
                not entry["resource"].get("resourceType"):
            raise bad_request(f"Bundle.entry[{i}] needs a resource", [f"Bundle.entry[{i}].resource"], "required")
        if "request" in entry:
            raise bad_request(f"Bundle.entry[{i}]: a message entry has no request", [f"Bundle.entry[{i}].request"])
    header = entries[0]["resource"]
    if header["resourceType"] != "MessageHeader":
        raise bad_request(f"Bundle.entry[0] must be the MessageHeader, not a {header['resourceType']}",
                          ["Bundle.entry[0].resource"])
    if any(e["resource"]["resourceType"] == "MessageHeader" for e in entries[1:]):
        raise bad_request("a message has one MessageHeader, the first entry", ["Bundle.entry"])
    where = "Bundle.entry[0].resource"
    message_id = header.get("id") or bundle.get("id")
    if not isinstance(message_id, str) or not message_id:
        raise bad_request("the MessageHeader needs an id (the message id)", [f"{where}.id"], "required")
    event = header.get("eventCoding")
    if not isinstance(event, dict):
        raise bad_request("MessageHeader.eventCoding is required", [f"{where}.eventCoding"], "required")
    if event.get("system") != BARS_EVENTS:
        raise bad_request(f"MessageHeader.eventCoding.system must be {BARS_EVENTS}, not {event.get('system')!r}",
                          [f"{where}.eventCoding.system"], "code-invalid")
    if event.get("code") not in SUPPORTED_EVENTS:
        raise FhirError(422, "not-supported", f"message event {event.get('code')!r} is not supported "
                                              f"(supported: {', '.join(SUPPORTED_EVENTS)})",
                        [f"{where}.eventCoding.code"])
    source = (header.get("source") or {}).get("endpoint") if isinstance(header.get("source"), dict) else None
    sender = header.get("sender")
    sender_ods = _ods(sender.get("identifier")) if isinstance(sender, dict) else None
    if not sender_ods:
        raise bad_request("MessageHeader.sender must identify the sender by ODS code "
                          f"(identifier.system {ODS})", [f"{where}.sender.identifier"], "required")
    if not source:
        raise bad_request("MessageHeader.source.endpoint is required", [f"{where}.source.endpoint"], "required")
    focus_list = header.get("focus")
    if not isinstance(focus_list, list) or not focus_list or not isinstance(focus_list[0], dict):
        raise bad_request("MessageHeader.focus must reference the ServiceRequest", [f"{where}.focus"], "required")
    focus_url = focus_list[0].get("reference")
    focus_entry = _find(entries, focus_url)
    if focus_entry is None:
        raise bad_request(f"MessageHeader.focus {focus_url!r} is not an entry of the Bundle",
                          [f"{where}.focus[0].reference"])
    focus = focus_entry["resource"]
    if focus["resourceType"] != "ServiceRequest":
        raise bad_request(f"MessageHeader.focus must be a ServiceRequest, not a {focus['resourceType']}",
                          [f"{where}.focus[0]"])
    sr_where = f"Bundle.entry[{entries.index(focus_entry)}].resource"
    code = focus.get("code")
    if not isinstance(code, dict) or not code.get("coding"):
        raise bad_request("ServiceRequest.code must say which assessment is requested",
                          [f"{sr_where}.code"], "required")
    if not any(isinstance(c, dict) and c.get("system") == ASSESSMENT_TYPES for c in code["coding"]):
        raise bad_request(f"ServiceRequest.code needs a coding from {ASSESSMENT_TYPES}",
                          [f"{sr_where}.code.coding"], "code-invalid")
    subject_url = (focus.get("subject") or {}).get("reference") if isinstance(focus.get("subject"), dict) else None
    patient_entry = _find(entries, subject_url)
    if patient_entry is None or patient_entry["resource"]["resourceType"] != "Patient":
        raise bad_request("ServiceRequest.subject must reference a Patient entry of the Bundle",
                          [f"{sr_where}.subject"], "required")
    patient = patient_entry["resource"]
    if not any(isinstance(i, dict) and i.get("system") == NHS and i.get("value")
               for i in patient.get("identifier") or []):
        raise bad_request("the Patient needs an NHS number", [f"Bundle.entry[{entries.index(patient_entry)}]"
                                                              ".resource.identifier"], "required")
    stored_entries = []
    for i, entry in enumerate(entries[1:], start=1):
        if not entry.get("fullUrl"):
            entry = dict(entry, fullUrl=f"urn:uuid:{uuid.uuid4()}")
        stored_entries.append(entry)
    focus_entry = next(e for e in stored_entries if e["resource"] is focus)
    patient_entry = next(e for e in stored_entries if e["resource"] is patient)
    return {"id": message_id, "header": header, "source": source, "sender_ods": sender_ods,
            "entries": stored_entries, "focus": focus, "focus_url": focus_entry["fullUrl"],
            "patient": patient, "patient_url": patient_entry["fullUrl"]}


def _find(entries: list[dict], reference) -> dict | None:
    if not isinstance(reference, str) or not reference:
        return None
    for entry in entries[1:]:
        res = entry["resource"]
        if entry.get("fullUrl") == reference:
            return entry
        if res.get("id") and (reference == f"{res['resourceType']}/{res['id']}" or
                              reference.endswith(f"/{res['resourceType']}/{res['id']}")):
            return entry
    return None


def _ods(identifier) -> str | None:
    if isinstance(identifier, dict) and identifier.get("system") in ODS_SPELLINGS and identifier.get("value"):
        return identifier["value"]
    return None


def _criteria(resource: dict, prefer: str | None = None) -> str | None:
    ids = resource.get("identifier")
    if isinstance(ids, dict):
        ids = [ids]
    ids = [i for i in ids or [] if isinstance(i, dict) and i.get("system") and i.get("value")]
    if not ids:
        return None
    chosen = next((i for i in ids if i["system"] == prefer), ids[0])
    return urlencode({"identifier": f"{chosen['system']}|{chosen['value']}"})


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
