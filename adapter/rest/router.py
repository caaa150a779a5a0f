"""FHIR REST interactions: read, vread, create, update, patch, delete, history, search.

Each interaction is a method taking the open store transaction and a FhirRequest, so the
HTTP server and the batch/transaction processor share every rule here.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Callable
from urllib.parse import parse_qsl, urlencode

import jsonpatch

from ..config import Settings
from ..fhir.errors import FhirError, Issue, bad_request, not_found, operation_outcome
from ..fhir.search_params import SearchRegistry, date_range
from ..fhir.search_query import QueryParser, SearchQuery
from ..security import audit, scopes
from ..security.caller import Caller
from ..store.repository import Repository, Stored, Transaction, new_id
from ..validation.validator import Validator, errors
from . import inbound
from .messages import FhirRequest, FhirResponse
from .rawjson import RawJson
from .shaping import shape

CANONICAL_TYPES = frozenset({"StructureDefinition", "Questionnaire", "ValueSet", "CodeSystem"})
ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
ETAG_RE = re.compile(r'^\s*(?:W/)?"?([0-9]+)"?\s*$')
NON_CRITERIA = {"_format", "_pretty"}


class FhirRouter:
    def __init__(self, repo: Repository, settings: Settings, registry: SearchRegistry, validator: Validator):
        self.repo = repo
        self.settings = settings
        self.registry = registry
        self.validator = validator
        self.parser = QueryParser(registry, settings.default_page_size, settings.max_page_size)
        self.types = frozenset(settings.resource_types)
        self._parsed: dict[tuple[str, str, int], dict] = {}  # conformance resources, by version
        # Interceptors: before every create/update/patch (they may refuse it by raising a
        # FhirError) and after it, inside the same database transaction.
        self.before_write: list[Callable[["FhirRouter", Transaction, str, "Stored | None", dict], None]] = []
        self.on_write: list[Callable[["FhirRouter", Transaction, Stored, dict, str], None]] = []
        from .audit import AuditTrail

        self.trail = AuditTrail(repo, settings.audit_queue_limit)
        self.policy = repo.access.policy
        from .bulk_export import Exporter

        self.exporter = Exporter(repo, self.trail)

    # -- authorisation -------------------------------------------------------------
    def authorise(self, caller: Caller, req: FhirRequest) -> None:
        """SMART scopes: may this client do this interaction on this type at all?

        Which records it may see is the store's business (Transaction.restriction); this is
        the coarse check of what the client was granted, applied to every entry of a Bundle.
        """
        path = req.path
        rtype = path[0] if path and path[0][:1].isupper() else None
        if req.method in ("POST", "PUT", "PATCH", "DELETE") and rtype in self.policy.server_written_types \
                and not _is_search(req) and not (path and path[-1].startswith("$")):
            raise FhirError(405, "not-supported", f"{rtype} records are written by this server only; "
                                                  "they cannot be created, changed or deleted through the API")
        if caller.unrestricted or (path and path[-1] in SELF_AUTHORISED_OPERATIONS):
            return
        if path and path[-1].startswith("$"):
            letter = "r" if req.method == "GET" else "c"
            rtype = rtype or "Bundle"  # system-level operations take Bundles or documents
        elif path[-1:] == ["_history"] or len(path) >= 3:
            letter = "r"  # history and vread
        elif _is_search(req) or (req.method in ("GET", "HEAD") and len(path) <= 1):
            letter = "s"
        else:
            letter = {"GET": "r", "HEAD": "r", "POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}[req.method]
        if not scopes.allows(caller.scopes, rtype or "*", letter):
            raise FhirError(403, "forbidden", f"the access token's scopes do not allow "
                                              f"{_INTERACTION_NAMES[letter]} of {rtype or 'all resource types'}")

    # -- entry point -------------------------------------------------------------
    def handle(self, caller: Caller, req: FhirRequest, base: str, address: str | None = None) -> FhirResponse:
        """One interaction, audited: writes with their AuditEvent and Provenance in the same
        transaction; reads and refusals through the audit queue."""
        from . import bundles, capability

        if req.path == [] and req.method == "POST" and not _is_transaction(req):
            return bundles.process(self, caller, req, base)  # a batch: every entry audited on its own
        if req.path == ["metadata"]:
            if req.method != "GET":
                raise _method_not_allowed(req)
            return FhirResponse(200, resource=capability.capability_statement(self, base))
        name, operation = audit.interaction_of(req.method, req.path)
        event = audit.Interaction(caller, name, req.method, req.url, 0, operation=operation, address=address,
                                  query=req.url if name.startswith("search") else None)
        if _may_return_audit_events(req):
            self.trail.flush()  # "who has seen this child" includes the reads of a moment ago
        try:
            response, tx = self._handle(caller, req, base, event)
        except FhirError as err:
            event.status, event.outcome_text = err.status, err.diagnostics
            if len(req.path) >= 2 and req.path[0] in self.types and not req.path[1].startswith(("$", "_")):
                event.resources = [(req.path[0], req.path[1], None)]  # what was asked for, seen or not
            self.trail.record_later(event)
            raise
        if tx is not None and not tx.audited:
            event.status = response.status
            event.resources = tx.disclosed_keys()
            self.trail.record_later(event)
        return response

    def _handle(self, caller: Caller, req: FhirRequest, base: str,
                event: audit.Interaction) -> tuple[FhirResponse, Transaction | None]:
        from . import bundles

        write = (req.method in ("POST", "PUT", "PATCH", "DELETE") and not _is_search(req)) \
            or (req.method == "GET" and req.path[-1:] == ["$export"])  # a kick-off records its job
        request_id = req.header("x-request-id") if write else None
        path = req.path
        by_id = req.method in ("GET", "HEAD") and (len(path) == 2 or (len(path) == 4 and path[2] == "_history")) \
            and path[0] != "AuditEvent" and not path[1].startswith(("$", "_"))  # read, vread
        for attempt in (1, 2):
            try:
                with self.repo.transaction(caller, write=write, base_url=base, snapshot=not by_id) as tx:
                    if request_id:
                        prior = inbound.replay(tx.conn, caller.client_id, request_id)
                        if prior is not None:
                            return prior, None
                    if req.path == [] and req.method == "POST":
                        response = FhirResponse(200, resource=bundles.run_transaction(
                            self, tx, req.body, base, req.header("prefer")))
                    else:
                        response = self.dispatch(tx, req, base)
                    if write:
                        event.status = response.status
                        self.trail.record_write(tx, event)
                        tx.audited = True
                    if request_id:
                        inbound.remember(tx.conn, caller.client_id, request_id, response)
                    return response, tx
            except inbound.AlreadyProcessed:
                if attempt == 2:
                    raise FhirError(409, "conflict", f"request {request_id} is being processed; retry") from None
        raise AssertionError("unreachable")

    def dispatch(self, tx: Transaction, req: FhirRequest, base: str) -> FhirResponse:
        self.authorise(tx.caller, req)
        path, method = req.path, req.method
        if not path:
            if method == "GET":
                return self.search(tx, req, base, None)
            raise _method_not_allowed(req)
        if path == ["_history"]:
            return self._only(req, "GET") or self.history(tx, req, base, None, None)
        if path == ["_search"]:
            return self._only(req, "POST") or self.search(tx, req, base, None)
        if path[-1].startswith("$"):
            return self.operation(tx, req, base)
        rtype = path[0]
        self._check_type(rtype)
        if len(path) == 1:
            if method == "GET":
                return self.search(tx, req, base, rtype)
            if method == "POST":
                return self.create(tx, req, base, rtype)
            if method == "PUT":
                return self.conditional_update(tx, req, base, rtype)
            if method == "DELETE":
                return self.conditional_delete(tx, req, rtype)
            if method == "PATCH":
                return self.conditional_patch(tx, req, base, rtype)
            raise _method_not_allowed(req)
        if len(path) == 2 and path[1] == "_search":
            return self._only(req, "POST") or self.search(tx, req, base, rtype)
        if len(path) == 2 and path[1] == "_history":
            return self._only(req, "GET") or self.history(tx, req, base, rtype, None)
        rid = path[1]
        if not ID_RE.fullmatch(rid):
            raise bad_request(f"'{rid}' is not a valid resource id", ["id"])
        if len(path) == 2:
            if method in ("GET", "HEAD"):
                return self.read(tx, req, rtype, rid)
            if method == "PUT":
                return self.update(tx, req, base, rtype, rid)
            if method == "DELETE":
                return self.delete(tx, req, rtype, rid)
            if method == "PATCH":
                return self.patch(tx, req, base, rtype, rid)
            raise _method_not_allowed(req)
        if path[2] == "_history" and len(path) == 3:
            return self._only(req, "GET") or self.history(tx, req, base, rtype, rid)
        if path[2] == "_history" and len(path) == 4:
            return self._only(req, "GET") or self.vread(tx, req, rtype, rid, path[3])
        raise not_found(f"no such FHIR endpoint: {req.method} /{'/'.join(path)}")

    @staticmethod
    def _only(req: FhirRequest, *methods: str) -> None:
        if req.method not in methods:
            raise _method_not_allowed(req)
        return None

    def _check_type(self, rtype: str) -> None:
        if rtype not in self.types:
            raise not_found(f"resource type '{rtype}' is not supported by this server")

    # -- read --------------------------------------------------------------------
    def read(self, tx: Transaction, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
        try:
            stored = tx.read(rtype, rid)
        except FhirError as err:
            if err.status == 410 and hasattr(err, "stored"):
                err.headers = {"ETag": err.stored.etag}  # type: ignore[attr-defined]
            raise
        return self._conditional_read(req, stored)

    def vread(self, tx: Transaction, req: FhirRequest, rtype: str, rid: str, vid: str) -> FhirResponse:
        return self._conditional_read(req, tx.vread(rtype, rid, vid))

    def _conditional_read(self, req: FhirRequest, stored: Stored) -> FhirResponse:
        headers = resource_headers(stored)
        inm = req.header("if-none-match")
        if inm and (inm.strip() == "*" or _parse_etag(inm) == stored.version_id):
            return FhirResponse(304, headers=headers)
        ims = req.header("if-modified-since")
        if ims:
            since = _parse_http_date(ims)
            if since is not None and stored.last_updated.replace(microsecond=0) <= since:
                return FhirResponse(304, headers=headers)
        summary = _param(req, "_summary")
        elements = _param(req, "_elements")
        if summary or elements:
            shaped = shape(stored.resource(), summary, elements.split(",") if elements else None)
            return FhirResponse(200, resource=shaped, headers=headers)
        return FhirResponse(200, stored=stored, headers=headers)

    # -- create ------------------------------------------------------------------
    def create(self, tx: Transaction, req: FhirRequest, base: str, rtype: str,
               assigned_id: str | None = None) -> FhirResponse:
        resource = self._body_resource(req, rtype)
        criteria = req.header("if-none-exist")
        query_criteria = [(k, v) for k, v in req.params if k not in NON_CRITERIA]
        if query_criteria and not criteria:
            criteria = urlencode(query_criteria)
        if criteria and getattr(req, "unmatched_after", None) == tx.writes_of(rtype):
            criteria = None   # a transaction's entry, found unmatched moments ago (bundles._assign)
        if criteria:
            matches = tx.find(self.criteria(rtype, criteria), limit=2)
            if len(matches) > 1:
                raise FhirError(412, "duplicate", f"If-None-Exist criteria '{criteria}' match "
                                                  f"more than one {rtype}")
            if matches:
                existing = tx.read(rtype, matches[0].res_id)
                return self._write_response(req, 200, existing, base)
        resource.pop("id", None)
        self._check(tx, resource)
        self._before(tx, rtype, None, resource)
        stored = tx.create(resource, assigned_id)
        self._written(tx, stored, resource, base)
        return self._write_response(req, 201, stored, base)

    # -- update ------------------------------------------------------------------
    def update(self, tx: Transaction, req: FhirRequest, base: str, rtype: str, rid: str) -> FhirResponse:
        resource = self._body_resource(req, rtype)
        if resource.get("id") is None:
            raise bad_request("the resource in an update must carry its id", [f"{rtype}.id"])
        if resource["id"] != rid:
            raise bad_request(f"resource id '{resource['id']}' does not match the URL id '{rid}'",
                              [f"{rtype}.id"])
        self._check(tx, resource)
        self._before(tx, rtype, rid, resource)
        stored, created = tx.update(rtype, rid, resource, if_match=self._if_match(req))
        self._written(tx, stored, resource, base)
        return self._write_response(req, 201 if created else 200, stored, base)

    def conditional_update(self, tx: Transaction, req: FhirRequest, base: str, rtype: str) -> FhirResponse:
        criteria = [(k, v) for k, v in req.params if k not in NON_CRITERIA]
        if not criteria:
            raise _method_not_allowed(req)
        resource = self._body_resource(req, rtype)
        matches = tx.find(self.criteria(rtype, urlencode(criteria)), limit=2)
        if len(matches) > 1:
            raise FhirError(412, "multiple-matches", f"conditional update criteria match more than one {rtype}")
        if matches:
            rid = matches[0].res_id
            if resource.get("id") not in (None, rid):
                raise bad_request(f"resource id '{resource['id']}' does not match the matching "
                                  f"resource {rtype}/{rid}", [f"{rtype}.id"])
        else:
            rid = resource.get("id") or new_id()
            if not ID_RE.fullmatch(str(rid)):
                raise bad_request(f"'{rid}' is not a valid resource id", [f"{rtype}.id"])
        resource["id"] = rid
        self._check(tx, resource)
        self._before(tx, rtype, rid, resource)
        stored, created = tx.update(rtype, rid, resource, if_match=self._if_match(req))
        self._written(tx, stored, resource, base)
        return self._write_response(req, 201 if created else 200, stored, base)

    # -- patch -------------------------------------------------------------------
    def patch(self, tx: Transaction, req: FhirRequest, base: str, rtype: str, rid: str) -> FhirResponse:
        ops = req.body
        if req.content_type not in ("application/json-patch+json", None) or not isinstance(ops, list):
            raise FhirError(415, "not-supported", "PATCH takes a JSON Patch document "
                                                  "(Content-Type: application/json-patch+json)")
        current = tx.read(rtype, rid)
        if_match = self._if_match(req)
        if if_match is not None and if_match != current.version_id:
            raise FhirError(412, "conflict", f"If-Match expected version {if_match} of {rtype}/{rid}, "
                                             f"but it is at version {current.version_id}")
        try:
            patched = jsonpatch.JsonPatch(ops).apply(current.resource())
        except jsonpatch.JsonPatchTestFailed as exc:
            raise FhirError(422, "processing", f"JSON Patch test failed: {exc}") from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
            raise bad_request(f"invalid JSON Patch: {exc}") from None
        if not isinstance(patched, dict):
            raise FhirError(422, "processing", "a patch must leave a resource (a JSON object), not "
                                               f"{type(patched).__name__}")
        if patched.get("resourceType") != rtype or patched.get("id") != rid:
            raise FhirError(422, "processing", "a patch may not change resourceType or id")
        self._check(tx, patched)
        self._before(tx, rtype, rid, patched)
        stored, _ = tx.update(rtype, rid, patched, if_match=current.version_id, method="PATCH")
        self._written(tx, stored, patched, base)
        return self._write_response(req, 200, stored, base)

    def conditional_patch(self, tx: Transaction, req: FhirRequest, base: str, rtype: str) -> FhirResponse:
        match = self._single_match(tx, req, rtype, "patch")
        if match is None:
            raise not_found(f"conditional patch criteria match no {rtype}")
        return self.patch(tx, req, base, rtype, match.res_id)

    # -- delete ------------------------------------------------------------------
    def delete(self, tx: Transaction, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
        tomb = tx.delete(rtype, rid, if_match=self._if_match(req))
        headers = {"ETag": tomb.etag} if tomb else {}
        return FhirResponse(204, headers=headers)

    def conditional_delete(self, tx: Transaction, req: FhirRequest, rtype: str) -> FhirResponse:
        match = self._single_match(tx, req, rtype, "delete")
        if match is None:
            return FhirResponse(204)
        return self.delete(tx, req, rtype, match.res_id)

    def _single_match(self, tx: Transaction, req: FhirRequest, rtype: str, what: str) -> Stored | None:
        criteria = [(k, v) for k, v in req.params if k not in NON_CRITERIA]
        if not criteria:
            raise _method_not_allowed(req)
        matches = tx.find(self.criteria(rtype, urlencode(criteria)), limit=2)
        if len(matches) > 1:
            raise FhirError(412, "multiple-matches", f"conditional {what} criteria match more than one {rtype}")
        return matches[0] if matches else None

    # -- search ------------------------------------------------------------------
    def criteria(self, rtype: str, criteria: str) -> SearchQuery:
        """Parse the criteria of a conditional interaction; unknown parameters are errors."""
        criteria = criteria.split("?", 1)[1] if "?" in criteria else criteria
        pairs = parse_qsl(criteria, keep_blank_values=True)
        if not pairs:
            raise bad_request(f"conditional criteria '{criteria}' are empty")
        query = self.parser.parse(rtype, pairs, strict=True)
        if not query.clauses:
            raise bad_request(f"conditional criteria '{criteria}' select nothing")
        return query

    def search(self, tx: Transaction, req: FhirRequest, base: str, rtype: str | None) -> FhirResponse:
        strict = "handling=strict" in (req.header("prefer") or "").replace(" ", "")
        query = self.parser.parse(rtype, req.params, strict=strict)
        result = tx.search(query)
        bundle = {"resourceType": "Bundle", "type": "searchset"}
        if result.total is not None:
            bundle["total"] = result.total
        bundle["link"] = self._page_links(base, rtype, query, result.total, len(result.matches))
        entries = [self._entry(base, s, "match", query) for s in result.matches]
        entries += [self._entry(base, s, "include", query) for s in result.included]
        if result.warnings:
            entries.append({"resource": operation_outcome(result.warnings), "search": {"mode": "outcome"}})
        if entries:
            bundle["entry"] = entries
        return FhirResponse(200, resource=bundle)

    def _entry(self, base: str, stored: Stored, mode: str, query: SearchQuery) -> dict:
        if query.summary in (None, "false") and not query.elements:
            resource = RawJson(stored.content)
        else:
            resource = shape(stored.resource(), query.summary, query.elements)
        return {"fullUrl": f"{base}/{stored.res_type}/{stored.res_id}", "resource": resource,
                "search": {"mode": mode}}

    @staticmethod
    def _page_links(base: str, rtype: str | None, query: SearchQuery, total: int | None, got: int) -> list:
        count = query.count or 0
        params = [(k, v) for k, v in query.raw if k != "_count"] + [("_count", str(count))]
        path = f"{base}/{rtype}" if rtype else base

        def url(offset: int) -> str:
            return f"{path}?{urlencode(params + ([('_offset', str(offset))] if offset else []))}"

        links = [{"relation": "self", "url": url(query.offset)}]
        if query.summary == "count":
            return links
        links.append({"relation": "first", "url": url(0)})
        if query.offset > 0 and count:
            links.append({"relation": "previous", "url": url(max(0, query.offset - count))})
        more = (total is not None and query.offset + got < total) or (total is None and got == count and count)
        if more and count:
            links.append({"relation": "next", "url": url(query.offset + count)})
        if total is not None and count:
            links.append({"relation": "last", "url": url(max(0, (total - 1) // count * count))})
        return links

    # -- history -----------------------------------------------------------------
    def history(self, tx: Transaction, req: FhirRequest, base: str, rtype: str | None,
                rid: str | None) -> FhirResponse:
        if rid is not None:
            tx.current(rtype, rid) or _raise(not_found(f"{rtype}/{rid} is not known"))
        count = self.settings.default_page_size
        offset, since, at = 0, None, None
        extra = []
        for key, value in req.params:
            if key == "_count":
                count = min(_int_param(key, value), self.settings.max_page_size)
            elif key == "_offset":
                offset = _int_param(key, value)
            elif key in ("_since", "_at"):
                rng = date_range(value)
                if rng is None:
                    raise bad_request(f"{key} must be a FHIR instant, not '{value}'", [key])
                if key == "_since":
                    since = rng.low
                else:
                    at = rng.high
                extra.append((key, value))
        versions, total = tx.history(rtype, rid, since, at, count, offset)
        path = "/".join(p for p in (base, rtype, rid) if p) + "/_history"

        def url(off: int) -> str:
            return f"{path}?{urlencode(extra + [('_count', str(count))] + ([('_offset', str(off))] if off else []))}"

        links = [{"relation": "self", "url": url(offset)}, {"relation": "first", "url": url(0)}]
        if offset > 0:
            links.append({"relation": "previous", "url": url(max(0, offset - count))})
        if offset + count < total:
            links.append({"relation": "next", "url": url(offset + count)})
        entries = [self._history_entry(base, v) for v in versions]
        bundle = {"resourceType": "Bundle", "type": "history", "total": total, "link": links}
        if entries:
            bundle["entry"] = entries
        return FhirResponse(200, resource=bundle)

    @staticmethod
    def _history_entry(base: str, v: Stored) -> dict:
        method = v.method or "PUT"
        url = v.res_type if method == "POST" else f"{v.res_type}/{v.res_id}"
        status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(method, "200 OK")
        if method == "PUT" and v.version_id == 1:
            status = "201 Created"
        entry: dict = {"fullUrl": f"{base}/{v.res_type}/{v.res_id}"}
        if v.content is not None:
            entry["resource"] = RawJson(v.content)
        entry["request"] = {"method": method, "url": url}
        entry["response"] = {"status": status, "etag": v.etag, "lastModified": v.last_updated_instant}
        return entry

    # -- validation ----------------------------------------------------------------
    def resolver(self, tx: Transaction):
        """Canonical lookups (Questionnaire, StructureDefinition, ...) in the store itself.

        Answers are remembered for the rest of the transaction (a document's resources
        ask for the same profiles many times); a conformance resource written in the
        same transaction clears them.
        """

        memo = tx.memo.setdefault("canonical", {})

        def resolve(rtype: str, canonical: str) -> dict | None:
            if (rtype, canonical) not in memo:
                memo[(rtype, canonical)] = lookup(rtype, canonical)
            return memo[(rtype, canonical)]

        def lookup(rtype: str, canonical: str) -> dict | None:
            url, _, version = canonical.partition("|")
            params = [("url", url)] + ([("version", version)] if version else [])
            query = self.parser.parse(rtype, params, strict=True)
            matches = tx.find(query, limit=50)
            if not matches:
                return None
            best = max(matches, key=lambda s: s.last_updated)
            if not version:  # the newest version of the canonical resource
                versions = [(s, s.resource()) for s in matches]
                best = max(versions, key=lambda p: _version_key(p[1].get("version", "")))[0]
            key = (best.res_type, best.res_id, best.version_id)
            if key not in self._parsed:
                if len(self._parsed) > 256:
                    self._parsed.clear()
                self._parsed[key] = best.resource()
            return self._parsed[key]

        return resolve

    def _before(self, tx: Transaction, rtype: str, rid: str | None, resource: dict) -> None:
        if not self.before_write:
            return
        current = tx.current(rtype, rid) if rid else None
        if current is not None and current.deleted:
            current = None
        for interceptor in self.before_write:
            interceptor(self, tx, rtype, current, resource)

    def _written(self, tx: Transaction, stored: Stored, resource: dict, base: str) -> None:
        if stored.res_type in CANONICAL_TYPES:
            tx.memo.pop("canonical", None)
        for interceptor in self.on_write:
            interceptor(self, tx, stored, resource, base)

    def _check(self, tx: Transaction, resource: dict, profile: str | None = None) -> None:
        """Refuse (422) a resource with error-level issues: structure, profiles, questionnaire."""
        issues = self.validator.validate(resource, self.resolver(tx), profile)
        failed = errors(issues)
        if failed:
            raise FhirError(422, failed[0].code, failed[0].diagnostics, issues=issues)

    # -- operations ----------------------------------------------------------------
    def operation(self, tx: Transaction, req: FhirRequest, base: str) -> FhirResponse:
        from .operations import OPERATIONS

        name = req.path[-1][1:]
        target = req.path[:-1]
        handler = OPERATIONS.get(name)
        if handler is None:
            raise not_found(f"operation ${name} is not supported")
        if target:
            self._check_type(target[0])
        return handler(self, tx, req, base, target)

    # -- helpers -----------------------------------------------------------------
    def _body_resource(self, req: FhirRequest, rtype: str) -> dict:
        body = req.body
        if not isinstance(body, dict):
            raise bad_request(f"the request needs a {rtype} resource as its body", code="required")
        if body.get("resourceType") != rtype:
            raise bad_request(f"body is a {body.get('resourceType')!r}, but the URL is for {rtype}",
                              ["resourceType"])
        return body

    @staticmethod
    def _if_match(req: FhirRequest) -> int | None:
        value = req.header("if-match")
        if value is None:
            return None
        version = _parse_etag(value)
        if version is None:
            raise bad_request(f"If-Match must be an ETag like W/\"3\", not '{value}'")
        return version

    def _write_response(self, req: FhirRequest, status: int, stored: Stored, base: str) -> FhirResponse:
        headers = resource_headers(stored)
        headers["Location"] = f"{base}/{stored.res_type}/{stored.res_id}/_history/{stored.version_id}"
        prefer = (req.header("prefer") or "").replace(" ", "")
        if "return=minimal" in prefer:
            return FhirResponse(status, headers=headers)
        if "return=OperationOutcome" in prefer:
            verb = "created" if status == 201 else "stored"
            outcome = operation_outcome([Issue("informational", f"{stored.res_type}/{stored.res_id} {verb} "
                                                                f"as version {stored.version_id}",
                                               severity="information")])
            return FhirResponse(status, resource=outcome, headers=headers)
        return FhirResponse(status, stored=stored, headers=headers)


def resource_headers(stored: Stored) -> dict[str, str]:
    moment = stored.last_updated.replace(tzinfo=timezone.utc)
    return {"ETag": stored.etag, "Last-Modified": format_datetime(moment, usegmt=True)}


READ_ONLY_POSTS = {"_search", "$validate", "$extract"}


def _is_transaction(req: FhirRequest) -> bool:
    return isinstance(req.body, dict) and req.body.get("resourceType") == "Bundle" and \
        req.body.get("type") == "transaction"


def _may_return_audit_events(req: FhirRequest) -> bool:
    """Whether the answer may hold AuditEvents (the audit trail's journal is stored as resources
    first): anything about AuditEvents, system-level searches and history, `_revinclude`,
    `_type` or `_has` naming them, and bulk export kick-offs."""
    path = req.path
    if path[:1] == ["AuditEvent"] or path[-1:] == ["$export"]:
        return True
    if req.method == "POST" and path != ["_search"]:
        return False
    if path in ([], ["_search"], ["_history"]):
        return True
    return any("AuditEvent" in name or "AuditEvent" in value for name, value in req.params)


def _is_search(req: FhirRequest) -> bool:
    """A POST that only reads: search, $validate, $extract."""
    return req.method == "POST" and bool(req.path) and req.path[-1] in READ_ONLY_POSTS


def _param(req: FhirRequest, name: str) -> str | None:
    for key, value in req.params:
        if key == name:
            return value
    return None


def _version_key(version: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in version.replace("-", ".").split("."))


def _parse_etag(value: str) -> int | None:
    m = ETAG_RE.match(value)
    return int(m.group(1)) if m else None


def _parse_http_date(value: str) -> datetime | None:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        rng = date_range(value)
        return rng.low if rng else None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def _int_param(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 10 or int(value) > 2_147_483_647:
        raise bad_request(f"{name} must be a non-negative integer up to 2147483647, not '{value[:20]}'", [name])
    return int(value)


def _raise(err: Exception):
    raise err


def _method_not_allowed(req: FhirRequest) -> FhirError:
    return FhirError(405, "not-supported", f"{req.method} is not allowed on /{'/'.join(req.path)}")


_INTERACTION_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
# Operations that check the client's scopes themselves (per exported type, or the job's owner).
SELF_AUTHORISED_OPERATIONS = frozenset({"$export", "$export-poll-status", "$export-file"})
