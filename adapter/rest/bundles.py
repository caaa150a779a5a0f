"""batch and transaction Bundles (FHIR R4 http.html#transaction).

A transaction runs every entry in one database transaction, in the order the
specification prescribes (DELETE, POST, PUT/PATCH, GET/HEAD), after giving every
`urn:uuid:` fullUrl its resource id and resolving conditional references, so the
whole Bundle commits or nothing does. A batch runs each entry on its own.
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl, urlsplit

from ..fhir import jsonio
from ..fhir.errors import FhirError, bad_request
from ..security.caller import Caller
from ..store.repository import Transaction, new_id
from .messages import FhirRequest, FhirResponse
from .rawjson import RawJson

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
HEADER_FIELDS = {"ifNoneMatch": "if-none-match", "ifModifiedSince": "if-modified-since",
                 "ifMatch": "if-match", "ifNoneExist": "if-none-exist"}
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}


def process(router, caller: Caller, req: FhirRequest, base: str) -> FhirResponse:
    bundle = req.body
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("POST to the base takes a batch or transaction Bundle", ["resourceType"])
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise bad_request(f"Bundle.type must be batch or transaction, not {kind!r}", ["Bundle.type"])
    entries = bundle.get("entry")
    entries = [] if entries is None else entries
    if not isinstance(entries, list):
        raise bad_request("Bundle.entry must be a list", ["Bundle.entry"])
    if kind == "batch":
        requests = [_entry_request(i, e, base, req) for i, e in enumerate(entries)]
        responses = [_batch_entry(router, caller, r, base) for r in requests]
        out = {"resourceType": "Bundle", "type": "batch-response",
               "entry": [_response_entry(r, base) for r in responses]}
        return FhirResponse(200, resource=out)
    with router.repo.transaction(caller, write=True, base_url=base) as tx:
        out = run_transaction(router, tx, bundle, base, req.headers.get("prefer"))
    return FhirResponse(200, resource=out)


def run_transaction(router, tx: Transaction, bundle: dict, base: str, prefer: str | None = None) -> dict:
    """Run a transaction Bundle inside an open store transaction; returns the response Bundle.

    Used for POSTed transactions and by writers that add their own entries to the same
    database transaction (document ingest, extraction on submit).
    """
    entries = bundle.get("entry")
    entries = [] if entries is None else entries
    if not isinstance(entries, list):
        raise bad_request("Bundle.entry must be a list", ["Bundle.entry"])
    outer = FhirRequest("POST", [], headers={"prefer": prefer} if prefer else {})
    requests = [_entry_request(i, e, base, outer) for i, e in enumerate(entries)]
    responses = _transaction(router, tx, requests, entries, base)
    return {"resourceType": "Bundle", "type": "transaction-response",
            "entry": [_response_entry(r, base) for r in responses]}


def _entry_request(i: int, entry: dict, base: str, outer: FhirRequest) -> FhirRequest:
    where = f"Bundle.entry[{i}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise bad_request(f"{where}: every entry needs a request", [f"{where}.request"])
    request = entry["request"]
    method = request.get("method")
    if not isinstance(method, str) or method not in ORDER:
        raise bad_request(f"{where}: request.method {method!r} is not one of "
                          f"{', '.join(ORDER)}", [f"{where}.request.method"])
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise bad_request(f"{where}: request.url is required", [f"{where}.request.url"])
    if url.startswith(base + "/"):
        url = url[len(base) + 1:]
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    headers = {h: request[f] for f, h in HEADER_FIELDS.items() if isinstance(request.get(f), str)}
    if "prefer" in outer.headers:
        headers["prefer"] = outer.headers["prefer"]
    body = entry.get("resource")
    content_type = None
    if method == "PATCH":
        body, content_type = _patch_body(where, body)
    elif body is not None and not isinstance(body, dict):
        raise bad_request(f"{where}: resource must be a JSON object", [f"{where}.resource"])
    fhir_req = FhirRequest(method=method, path=path, params=parse_qsl(parts.query, keep_blank_values=True),
                           headers=headers, body=body, content_type=content_type)
    fhir_req.index = i  # type: ignore[attr-defined]
    fhir_req.full_url = entry.get("fullUrl")  # type: ignore[attr-defined]
    return fhir_req


def _patch_body(where: str, body) -> tuple[list, str]:
    """A PATCH entry carries its JSON Patch as a Binary (FHIR R4 http.html#patch)."""
    if isinstance(body, dict) and body.get("resourceType") == "Binary" and \
            body.get("contentType") == "application/json-patch+json":
        try:
            ops = jsonio.loads(base64.b64decode(body.get("data", ""), validate=True))
        except (ValueError, FhirError) as exc:
            raise bad_request(f"{where}: the Binary does not hold a JSON Patch: {exc}") from None
        return ops, "application/json-patch+json"
    raise FhirError(415, "not-supported", f"{where}: a PATCH entry needs a Binary with contentType "
                                          "application/json-patch+json")


def _batch_entry(router, caller: Caller, req: FhirRequest, base: str):
    try:
        return router.handle(caller, req, base)
    except FhirError as err:
        return err


def _is_nested_bundle(req: FhirRequest) -> bool:
    return req.path == [] and req.method == "POST"


def _transaction(router, tx: Transaction, requests: list[FhirRequest], entries: list[dict], base: str) -> list:
    """Run every entry in `tx`; the first failure aborts the whole Bundle."""
    ids: dict[str, str] = {}  # fullUrl -> Type/id
    plan = sorted(range(len(requests)), key=lambda i: ORDER[requests[i].method])
    for i in plan:
        req = requests[i]
        if _is_nested_bundle(req):
            raise bad_request(f"Bundle.entry[{i}]: a transaction cannot contain another transaction or batch")
        full_url = getattr(req, "full_url", None)
        if req.method == "POST" and len(req.path) == 1:
            req.assigned_id = _assign(router, tx, req, i)  # type: ignore[attr-defined]
            if full_url:
                ids[full_url] = f"{req.path[0]}/{req.assigned_id}"  # type: ignore[attr-defined]
        elif req.method == "PUT" and len(req.path) == 2 and full_url:
            ids[full_url] = f"{req.path[0]}/{req.path[1]}"
        elif req.method == "PUT" and len(req.path) == 1 and full_url:
            match = _single(router, tx, req.path[0], req.params, i)
            rid = match or (req.body or {}).get("id") or new_id()
            req.body = dict(req.body or {}, id=rid) if isinstance(req.body, dict) else req.body
            ids[full_url] = f"{req.path[0]}/{rid}"
    for req in requests:
        if isinstance(req.body, dict):
            _rewrite_references(router, tx, req.body, ids, req)
        if req.method in ("GET", "HEAD", "DELETE"):
            req.path = [p for seg in req.path for p in [ids.get(seg, seg)]]
    responses: list = [None] * len(requests)
    for i in plan:
        req = requests[i]
        try:
            existing = getattr(req, "existing", None)
            if existing is not None:
                responses[i] = router._write_response(req, 200, existing, base)
            elif req.method == "POST" and len(req.path) == 1:
                router.authorise(tx.caller, req)
                responses[i] = router.create(tx, req, base, req.path[0],
                                             assigned_id=req.assigned_id)  # type: ignore[attr-defined]
            else:
                responses[i] = router.dispatch(tx, req, base)
        except FhirError as err:
            err.issues[0].diagnostics = f"Bundle.entry[{i}]: {err.issues[0].diagnostics}"
            raise
    return responses


def _assign(router, tx: Transaction, req: FhirRequest, i: int) -> str:
    """The id a POST entry will get: a new one, or an existing match of its ifNoneExist."""
    criteria = req.header("if-none-exist")
    if criteria:
        try:
            matches = tx.find(router.criteria(req.path[0], criteria), limit=2)
        except FhirError as err:
            err.issues[0].diagnostics = f"Bundle.entry[{i}]: {err.issues[0].diagnostics}"
            raise
        if len(matches) > 1:
            raise FhirError(412, "duplicate", f"Bundle.entry[{i}]: ifNoneExist '{criteria}' matches more "
                                              f"than one {req.path[0]}")
        if matches:
            req.existing = tx.read(req.path[0], matches[0].res_id)  # type: ignore[attr-defined]
            return matches[0].res_id
        req.unmatched_after = tx.writes_of(req.path[0])  # type: ignore[attr-defined]
    return new_id()


def _single(router, tx: Transaction, rtype: str, params: list, i: int) -> str | None:
    from urllib.parse import urlencode

    matches = tx.find(router.criteria(rtype, urlencode(params)), limit=2)
    if len(matches) > 1:
        raise FhirError(412, "multiple-matches", f"Bundle.entry[{i}]: criteria match more than one {rtype}")
    return matches[0].res_id if matches else None


def _rewrite_references(router, tx: Transaction, node, ids: dict[str, str], req: FhirRequest) -> None:
    """Replace fullUrls wherever they stand, and conditional references (`Type?params`).

    FHIR's transaction rules: every matching link is replaced, in references and in
    uri/url elements alike (Attachment.url pointing at a Binary in the same Bundle).
    """
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            for key, value in cur.items():
                if isinstance(value, str):
                    if value in ids:  # references, and uri/url elements (e.g. Attachment.url)
                        cur[key] = ids[value]
                    elif key == "reference" and "?" in value and "/" not in value.split("?", 1)[0]:
                        cur[key] = _resolve_conditional(router, tx, value, req)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(cur, list):
            for i, value in enumerate(cur):
                if isinstance(value, str) and value in ids:
                    cur[i] = ids[value]
                elif isinstance(value, (dict, list)):
                    stack.append(value)


def _resolve_conditional(router, tx: Transaction, ref: str, req: FhirRequest) -> str:
    rtype, query = ref.split("?", 1)
    router._check_type(rtype)
    matches = tx.find(router.criteria(rtype, query), limit=2)
    where = f"Bundle.entry[{getattr(req, 'index', '?')}]"
    if not matches:
        raise FhirError(404, "not-found", f"{where}: conditional reference '{ref}' matches no resource")
    if len(matches) > 1:
        raise FhirError(412, "multiple-matches", f"{where}: conditional reference '{ref}' matches "
                                                 "more than one resource")
    return f"{rtype}/{matches[0].res_id}"


def _response_entry(result, base: str) -> dict:
    if isinstance(result, FhirError):
        return {"response": {"status": str(result.status), "outcome": result.outcome()}}
    response: dict = {"status": STATUS_TEXT.get(result.status, str(result.status))}
    if "Location" in result.headers:
        response["location"] = result.headers["Location"]
    if "ETag" in result.headers:
        response["etag"] = result.headers["ETag"]
    entry: dict = {}
    if result.stored is not None:
        entry["fullUrl"] = f"{base}/{result.stored.res_type}/{result.stored.res_id}"
        response["lastModified"] = result.stored.last_updated_instant
        if result.stored.content is not None:
            entry["resource"] = RawJson(result.stored.content)
    elif result.resource is not None:
        entry["resource"] = result.resource
    entry["response"] = response
    return entry
