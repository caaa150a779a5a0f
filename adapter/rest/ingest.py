"""Store a mapped source document: the source kept, every derived resource traced to it.

One database transaction holds the Binary (the bytes as received), the DocumentReference
(the document's identity), the mapped resources and a Provenance pointing from them to
the document. A document whose identifier is already stored is not imported again.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..fhir.errors import FhirError, Issue
from ..mapping.document import MappedDocument
from ..security.caller import Caller
from ..store.repository import Transaction
from .bundles import run_transaction

ADAPTER_DEVICE = {"display": "lac-fhir-adapter mapping"}
MAPPING_BASE = "https://lac-fhir-adapter.example/fhir/mapping/"


@dataclass
class Ingested:
    created: bool                      # False: this document was imported before
    document_reference: str            # "DocumentReference/<id>"
    derived: list[str] = field(default_factory=list)   # locations of the mapped resources
    warnings: list[Issue] = field(default_factory=list)


def ingest(router, caller: Caller, doc: MappedDocument, base: str) -> Ingested:
    with router.repo.transaction(caller, write=True, base_url=base) as tx:
        return ingest_in(router, tx, doc, base)


def ingest_in(router, tx: Transaction, doc: MappedDocument, base: str) -> Ingested:
    ident = f"{doc.identifier['system']}|{doc.identifier['value']}"
    seen = tx.find(router.criteria("DocumentReference", f"identifier={ident}"), limit=1)
    if seen:
        return Ingested(False, f"DocumentReference/{seen[0].res_id}",
                        warnings=[Issue("informational", f"document {doc.identifier['value']} was imported "
                                                         "before; nothing changed", severity="information")])
    _check_subject(router, tx, doc)
    mapped = [_settled_reference_data(router, tx, e) for e in doc.bundle.get("entry") or []]
    binary_url, docref_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    entries = [
        {"fullUrl": binary_url, "resource": _binary(doc), "request": {"method": "POST", "url": "Binary"}},
        {"fullUrl": docref_url, "resource": _document_reference(doc, binary_url),
         "request": {"method": "POST", "url": "DocumentReference"}},
        *mapped,
    ]
    targets = [e["fullUrl"] for e in mapped if e.get("fullUrl") and e.get("request", {}).get("method") in ("POST", "PUT")]
    if targets:
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": _provenance(doc, targets, docref_url),
                        "request": {"method": "POST", "url": "Provenance"}})
    response = run_transaction(router, tx, {"resourceType": "Bundle", "type": "transaction", "entry": entries}, base)
    locations = [e["response"].get("location", "") for e in response["entry"]]
    docref = locations[1].split("/_history")[0].replace(base + "/", "")
    derived = [loc.split("/_history")[0].replace(base + "/", "") for loc in locations[2:2 + len(mapped)]]
    warnings = [Issue("informational", f"{u}: not mapped", severity="warning") for u in doc.unconsumed]
    return Ingested(True, docref, derived, warnings)


REFERENCE_DATA = frozenset({"Organization"})


def _settled_reference_data(router, tx: Transaction, entry: dict) -> dict:
    """A mapped document names organisations by ODS code, created if absent (`ifNoneExist`).
    When a partner has stored a second Organization with the same code, that conditional create
    would match many, which FHIR makes a 412 failing the whole document; an organisation is
    reference data, so the entry is pinned to one of the matches instead (the lowest id, as the
    pathway's planning does: rest/pathway_hooks.known_organisations)."""
    request = entry.get("request") or {}
    rtype = (entry.get("resource") or {}).get("resourceType")
    criteria = request.get("ifNoneExist")
    if rtype not in REFERENCE_DATA or request.get("method") != "POST" or not criteria:
        return entry
    matches = tx.search(router.criteria(rtype, criteria)).matches
    if len(matches) < 2:
        return entry
    chosen = min(m.res_id for m in matches)
    return {**entry, "request": {**request, "ifNoneExist": f"_id={chosen}"}}


def _check_subject(router, tx: Transaction, doc: MappedDocument) -> None:
    """A document about a child we do not hold (and does not itself introduce) is refused."""
    subject = doc.subject
    if not subject or "?" not in subject:
        return
    creates_it = any(e.get("request", {}).get("method") in ("POST", "PUT")
                     and (e.get("resource") or {}).get("resourceType") == "Patient"
                     for e in doc.bundle.get("entry") or [])
    if creates_it:
        return
    rtype, criteria = subject.split("?", 1)
    if not tx.find(router.criteria(rtype, criteria), limit=1):
        raise FhirError(422, "not-found", f"the document is about a child this service does not know "
                                          f"({criteria}); the LA's notification must come first",
                        [f"{rtype}.identifier"])


def _binary(doc: MappedDocument) -> dict:
    return {"resourceType": "Binary", "contentType": doc.content_type,
            "data": base64.b64encode(doc.source).decode("ascii")}


def _document_reference(doc: MappedDocument, binary_url: str) -> dict:
    now = _now()
    ref: dict = {
        "resourceType": "DocumentReference",
        "identifier": [doc.identifier],
        "status": "current",
        "type": {"text": doc.document_type},
        "date": now,
        "description": f"Source document as received, mapped with {doc.mapping}",
        "content": [{"attachment": {
            "contentType": doc.content_type, "url": binary_url, "size": len(doc.source),
            "hash": base64.b64encode(hashlib.sha1(doc.source).digest()).decode("ascii"),  # noqa: S324 - FHIR's hash is SHA-1
            "creation": now}}],
    }
    if doc.subject:
        ref["subject"] = {"reference": doc.subject}
    if doc.unconsumed:
        ref["description"] += f"; {len(doc.unconsumed)} source element(s) not mapped: " + "; ".join(doc.unconsumed[:20])
    return ref


def _provenance(doc: MappedDocument, targets: list[str], docref_url: str) -> dict:
    return {
        "resourceType": "Provenance",
        "target": [{"reference": t} for t in targets],
        "recorded": _now(),
        "policy": [MAPPING_BASE + doc.mapping],
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": "TRANSFORM", "display": "transform"}]},
        "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                        "code": "assembler", "display": "Assembler"}]},
                   "who": ADAPTER_DEVICE}],
        "entity": [{"role": "source", "what": {"reference": docref_url}}],
    }


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
