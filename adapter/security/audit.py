"""AuditEvent and Provenance content for one FHIR interaction (plain functions, no I/O).

AuditEvents follow the IHE Basic Audit Log Patterns (BALP) for RESTful interactions: type
`rest`, subtype the FHIR interaction, the client and its organisation as requesting agents,
this server as the source, and entities for the patients concerned (role Patient), the
resource touched (role Domain Resource) and, for searches, the query (role Query). They
are what "who has looked at this child?" is answered from (`AuditEvent?patient=`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from .access import ODS
from .caller import Caller

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
CLIENT_ID_SYSTEM = "https://lac-fhir-adapter.example/fhir/Id/client-id"
SERVER_NAME = "lac-fhir-adapter"

ACTION = {"read": "R", "vread": "R", "search-type": "E", "search-system": "E", "history-instance": "R",
          "history-type": "R", "history-system": "R", "create": "C", "update": "U", "patch": "U",
          "delete": "D", "transaction": "E", "batch": "E", "operation": "E", "capabilities": "R"}


@dataclass
class Interaction:
    """What one request did, as the audit records it."""

    caller: Caller
    interaction: str                          # a restful-interaction code, or "operation"
    method: str
    path: str                                 # relative to the FHIR base, with the query
    status: int
    outcome_text: str | None = None
    resources: list[tuple[str, str, int | None]] = field(default_factory=list)  # type, id, version
    patients: list[str] = field(default_factory=list)                          # Patient ids
    query: str | None = None
    address: str | None = None
    operation: str | None = None
    recorded: str | None = None               # FHIR instant; set when the event is queued


def interaction_of(method: str, path: list[str]) -> tuple[str, str | None]:
    """(restful-interaction code, operation name) of a request on the FHIR base."""
    if path and path[-1].startswith("$"):
        return "operation", path[-1]
    if path == ["metadata"]:
        return "capabilities", None
    if not path:
        return ("search-system", None) if method == "GET" else ("transaction", None)
    if path[-1] == "_history":
        return {1: "history-system", 2: "history-type", 3: "history-instance"}.get(len(path), "history-instance"), None
    if path[-1] == "_search" or (len(path) == 1 and method == "GET"):
        return ("search-system" if path == ["_search"] else "search-type"), None
    if len(path) == 4:
        return "vread", None
    return {"GET": "read", "HEAD": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete",
            "POST": "create"}.get(method, "read"), None


def outcome_code(status: int) -> str:
    return "0" if status < 400 else ("8" if status >= 500 else "4")


def audit_event(event: Interaction, recorded: str) -> dict:
    caller = event.caller
    subtype = {"system": INTERACTION, "code": event.interaction}
    if event.operation:
        subtype = {"system": INTERACTION, "code": "operation", "display": event.operation}
    agents = [{
        "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
        "who": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": caller.client_id}},
        "requestor": True,
        **({"network": {"address": event.address[:200], "type": "2"}} if event.address else {}),
    }]
    if caller.organisation:
        agents.append({"type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
                       "who": {"identifier": {"system": ODS, "value": caller.organisation}},
                       "requestor": True})
    if caller.user:
        agents.append({"type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
                       "who": {"display": caller.user[:200]}, "requestor": True})
    entities = [{"what": {"reference": f"Patient/{pid}"},
                 "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                 "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}}
                for pid in sorted(set(event.patients))]
    for rtype, rid, version in event.resources[:MAX_RESOURCE_ENTITIES]:
        if rtype == "Patient":
            continue
        ref = f"{rtype}/{rid}" + (f"/_history/{version}" if version else "")
        entities.append({"what": {"reference": ref},
                         "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                         "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}})
    if event.query is not None:
        entities.append({"type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                         "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                         "query": base64.b64encode(event.query.encode("utf-8")[:4000]).decode("ascii")})
    body = {
        "resourceType": "AuditEvent",
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [subtype],
        "action": ACTION.get(event.interaction, "E"),
        "recorded": recorded,
        "outcome": outcome_code(event.status),
        "agent": agents,
        "source": {"observer": {"display": SERVER_NAME},
                   "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}]},
    }
    text = f"{event.method} {event.path[:500]} -> {event.status}"
    if event.outcome_text:
        text += f": {event.outcome_text[:500]}"
    body["outcomeDesc"] = text
    if entities:
        body["entity"] = entities
    return body


MAX_RESOURCE_ENTITIES = 200


def provenance(caller: Caller, written: list[tuple[str, str, int, str]], recorded: str) -> dict:
    """One Provenance for the versions a request wrote: (type, id, version, method)."""
    methods = {m for *_, m in written}
    activity = "CREATE" if methods == {"POST"} else "DELETE" if methods == {"DELETE"} else "UPDATE"
    who = ({"identifier": {"system": ODS, "value": caller.organisation}} if caller.organisation
           else {"display": SERVER_NAME})
    agent = {"type": {"coding": [{"system": PARTICIPANT, "code": "author", "display": "Author"}]},
             "who": who}
    if caller.organisation:  # the client system wrote on behalf of its organisation
        agent["who"] = {"identifier": {"system": CLIENT_ID_SYSTEM, "value": caller.client_id},
                        "display": caller.client_id}
        agent["onBehalfOf"] = who
    return {
        "resourceType": "Provenance",
        "target": [{"reference": f"{t}/{i}/_history/{v}"} for t, i, v, _ in written],
        "recorded": recorded,
        "activity": {"coding": [{"system": DATA_OPERATION, "code": activity}]},
        "agent": [agent],
    }
