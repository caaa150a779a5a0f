"""FHIR operations ($name) the server implements, each a plain function over the router."""

from __future__ import annotations

from ..fhir.errors import FhirError, Issue, bad_request, operation_outcome
from ..store.repository import Transaction
from .messages import FhirRequest, FhirResponse


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


OPERATIONS = {"validate": validate}
