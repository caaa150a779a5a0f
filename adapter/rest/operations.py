"""FHIR operations ($name) the server implements, each a plain function over the router."""

from __future__ import annotations

from urllib.parse import urlencode

from ..fhir.errors import FhirError, Issue, bad_request, operation_outcome
from ..store.repository import Transaction
from .messages import FhirRequest, FhirResponse
from .rawjson import RawJson


def validate(router, tx: Transaction, req: FhirRequest, base: str, target: list[str]) -> FhirResponse:
    """$validate (FHIR R4 Resource-validate) at type or instance level; always answers 200.

    The resource comes from the body (bare, or as the `resource` parameter of Parameters),
    or, at instance level without a body, from the store. `profile` may come from the
    query or the Parameters; `mode` create/update/profile are accepted.
    """
    if req.method not in ("GET", "POST"):
        raise FhirError(405, "not-supported", f"{req.method} is not allowed on $validate")
    if not target:
        raise bad_request("$validate needs a resource type: POST [type]/$validate")
    rtype = target[0]
    resource, profile, mode = None, None, None
    body = req.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for p in body.get("parameter", []):
            if p.get("name") == "resource":
                resource = p.get("resource")
            elif p.get("name") == "profile":
                profile = p.get("valueUri") or p.get("valueCanonical") or p.get("valueString")
            elif p.get("name") == "mode":
                mode = p.get("valueCode") or p.get("valueString")
    elif isinstance(body, dict):
        resource = body
    for key, value in req.params:
        if key == "profile":
            profile = value
        elif key == "mode":
            mode = value
    if mode not in (None, "create", "update", "profile"):
        raise bad_request(f"$validate mode '{mode}' is not supported (create, update or profile)", ["mode"])
    if resource is None:
        if len(target) != 2:
            raise bad_request("$validate needs the resource in the body", code="required")
        resource = tx.read(rtype, target[1]).resource()
    if resource.get("resourceType") != rtype:
        raise bad_request(f"the resource is a {resource.get('resourceType')!r}, not a {rtype}", ["resourceType"])
    if len(target) == 2 and mode == "update" and resource.get("id") != target[1]:
        raise bad_request(f"resource id '{resource.get('id')}' does not match '{target[1]}'", [f"{rtype}.id"])
    issues = router.validator.validate(resource, router.resolver(tx), profile)
    if not issues:
        issues = [Issue("informational", "no issues found", severity="information")]
    return FhirResponse(200, resource=operation_outcome(issues))


def _document_operation(mapper_name: str, label: str):
    """An operation that takes a partner document, maps it and stores it (see rest.ingest)."""

    def operation(router, tx: Transaction, req: FhirRequest, base: str, target: list[str]) -> FhirResponse:
        if req.method != "POST":
            raise FhirError(405, "not-supported", f"${label} takes a POST of the document")
        if target:
            raise bad_request(f"${label} is a system-level operation: POST [base]/${label}")
        if not req.raw:
            raise bad_request(f"${label} needs the document as the request body", code="required")
        from ..mapping import documents

        doc = documents.MAPPERS[mapper_name](req.raw, req.content_type)
        from .ingest import ingest_in

        result = ingest_in(router, tx, doc, base)
        message = (f"imported as {result.document_reference} with {len(result.derived)} mapped resource(s)"
                   if result.created else f"already imported as {result.document_reference}")
        issues = [Issue("informational", message, severity="information"), *result.warnings]
        headers = {"Location": f"{base}/{result.document_reference}"}
        return FhirResponse(201 if result.created else 200, resource=operation_outcome(issues), headers=headers)

    return operation


def _response_for(router, tx: Transaction, req: FhirRequest, target: list[str]) -> tuple[dict, str | None]:
    """The QuestionnaireResponse an operation works on: stored (instance level) or in the body."""
    if len(target) == 2:
        return tx.read(target[0], target[1]).resource(), f"QuestionnaireResponse/{target[1]}"
    body = req.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        body = next((p.get("resource") for p in body.get("parameter", [])
                     if p.get("name") == "questionnaire-response"), None)
    if not isinstance(body, dict) or body.get("resourceType") != "QuestionnaireResponse":
        raise bad_request("the operation needs a QuestionnaireResponse (body, or the "
                          "'questionnaire-response' parameter)", code="required")
    return body, None


def _questionnaire_of(router, tx: Transaction, response: dict) -> dict:
    canonical = response.get("questionnaire")
    questionnaire = router.resolver(tx)("Questionnaire", canonical) if canonical else None
    if questionnaire is None:
        raise FhirError(422, "not-found", f"Questionnaire {canonical!r} is not known to this server",
                        ["QuestionnaireResponse.questionnaire"])
    return questionnaire


def extract(router, tx: Transaction, req: FhirRequest, base: str, target: list[str]) -> FhirResponse:
    """SDC $extract: the transaction Bundle a response's answers produce (not applied)."""
    if target[:1] != ["QuestionnaireResponse"]:
        raise bad_request("$extract applies to QuestionnaireResponse")
    response, ref = _response_for(router, tx, req, target)
    from ..mapping.extract import extract as run_extract

    return FhirResponse(200, resource=run_extract(response, _questionnaire_of(router, tx, response), ref))


def report(router, tx: Transaction, req: FhirRequest, base: str, target: list[str]) -> FhirResponse:
    """The printable HTML health assessment report of a stored QuestionnaireResponse."""
    if target[:1] != ["QuestionnaireResponse"] or len(target) != 2 or req.method != "GET":
        raise bad_request("$report is GET QuestionnaireResponse/[id]/$report")
    response = tx.read(target[0], target[1]).resource()
    questionnaire = _questionnaire_of(router, tx, response)
    patient, consents, extracted = None, [], []
    subject = (response.get("subject") or {}).get("reference", "")
    if subject.startswith("Patient/"):
        try:
            patient = tx.read("Patient", subject.split("/", 1)[1]).resource()
        except FhirError:
            patient = None
        if patient is not None:
            query = router.parser.parse("Consent", [("patient", subject)])
            consents = [s.resource() for s in tx.search(query).matches]
    query = router.parser.parse("Observation", [("derived-from", f"QuestionnaireResponse/{target[1]}")])
    extracted = [s.resource() for s in tx.search(query).matches]
    query = router.parser.parse("Provenance", [("entity", f"QuestionnaireResponse/{target[1]}")])
    for prov in tx.search(query).matches:
        for t in prov.resource().get("target", []):
            rtype, _, rid = t.get("reference", "").partition("/")
            if rtype in ("CarePlan", "Consent") and rid:
                try:
                    extracted.append(tx.read(rtype, rid).resource())
                except FhirError:
                    continue
    from ..mapping.report import render_report

    html = render_report(response, questionnaire, patient, consents, extracted)
    return FhirResponse(200, content=html.encode("utf-8"), media_type="text/html; charset=utf-8")


def export_form(router, tx: Transaction, req: FhirRequest, base: str, target: list[str]) -> FhirResponse:
    """A stored QuestionnaireResponse as the BAAF-style form XML partners' systems read."""
    if target[:1] != ["QuestionnaireResponse"] or len(target) != 2 or req.method != "GET":
        raise bad_request("$export-form is GET QuestionnaireResponse/[id]/$export-form")
    from ..mapping.forms import form_xml

    xml = form_xml(tx.read(target[0], target[1]).resource())
    return FhirResponse(200, content=xml, media_type="application/xml; charset=utf-8")


def everything(router, tx: Transaction, req: FhirRequest, base: str, target: list[str]) -> FhirResponse:
    """Patient/[id]/$everything (R4 Patient-everything): the child and every current resource
    about them (the Patient compartment) that the caller may see, paged with _count/_offset;
    `_type` limits the types, `_since` to changes from then on. A hidden child is a 404. The
    audit trail about the child is not part of the record unless asked for (_type=AuditEvent)."""
    if req.method not in ("GET", "POST") or len(target) != 2 or target[0] != "Patient":
        raise bad_request("$everything is GET Patient/[id]/$everything")
    params = dict(req.params)
    patient = tx.read("Patient", target[1])
    types = type_param(router, params)
    since = since_param(params)
    count = _bounded(params.get("_count"), router.settings.default_page_size, router.settings.max_page_size, "_count")
    offset = _bounded(params.get("_offset"), 0, 10**9, "_offset")
    if not types:  # the child's record, not the audit trail about it (ask with _type=AuditEvent)
        types = [t for t in sorted(router.types) if router.policy.compartment_params(t)
                 and t not in router.policy.server_written_types]
    rows, total = tx.compartment(patient.res_id, types, since, count, offset)
    path = f"{base}/Patient/{patient.res_id}/$everything"
    kept = [(k, v) for k, v in req.params if k not in ("_count", "_offset")] + [("_count", str(count))]
    links = [{"relation": "self", "url": f"{path}?{urlencode(kept + [('_offset', str(offset))])}"}]
    if offset + len(rows) < total:
        links.append({"relation": "next", "url": f"{path}?{urlencode(kept + [('_offset', str(offset + count))])}"})
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links,
              "entry": [{"fullUrl": f"{base}/{s.res_type}/{s.res_id}", "resource": RawJson(s.content),
                         "search": {"mode": "match"}} for s in rows]}
    return FhirResponse(200, resource=bundle)


def type_param(router, params: dict) -> list[str]:
    """`_type` of $everything and $export: served resource types, comma-separated (400 otherwise)."""
    types = [t for t in (params.get("_type") or "").split(",") if t]
    unknown = [t for t in types if t not in router.types]
    if unknown:
        raise bad_request(f"_type: {', '.join(unknown)[:200]} is not a resource type this server serves", ["_type"])
    return types


def since_param(params: dict):
    """`_since` of $everything and $export, as naive UTC (400 if it is not a FHIR instant)."""
    if not params.get("_since"):
        return None
    from ..fhir.search_params import date_range

    found = date_range(params["_since"])
    if found is None:
        raise bad_request(f"_since '{params['_since'][:40]}' is not a FHIR instant", ["_since"])
    return found.low


def _bounded(value: str | None, default: int, largest: int, name: str) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or len(value) > 10:
        raise bad_request(f"{name} must be a non-negative integer, not '{value[:20]}'", [name])
    return min(int(value), largest)


def _bulk(name: str):
    def run(*args):
        from . import bulk_export

        return getattr(bulk_export, name)(*args)
    return run


OPERATIONS = {
    "everything": everything,
    "export": _bulk("kick_off"),
    "export-poll-status": _bulk("poll_status"),
    "export-file": _bulk("download"),
    "export-form": export_form,
    "validate": validate,
    "extract": extract,
    "report": report,
    "import-form": _document_operation("form", "import-form"),
    "la-notification": _document_operation("la-notification", "la-notification"),
    "import-903": _document_operation("ssda903", "import-903"),
    "process-message": lambda *a: __import__("adapter.exchange.messaging", fromlist=["x"]).process_message(*a),
    "evaluate-measure": lambda *a: __import__("adapter.rest.measure_ops", fromlist=["x"]).evaluate_measure(*a),
    "dashboard": lambda *a: __import__("adapter.rest.dashboard_op", fromlist=["x"]).dashboard(*a),
}
