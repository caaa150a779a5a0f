"""The FastAPI application: HTTP in, FhirRequest to the router, FHIR out.

All FHIR semantics live in adapter.rest; this module only reads the HTTP request
(size limit, content type, format), calls the router and writes the response.
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from ..config import Settings
from ..exchange import ooa, subscriptions
from ..exchange.partners import default_registry
from ..fhir.errors import FhirError
from ..fhir.search_params import SearchRegistry
from ..rest.interceptors import consent_grantor, extract_on_submit, quality_audit_on_submit, task_lifecycle
from ..rest.messages import FhirRequest, FhirResponse
from ..rest.pathway_hooks import plan_next_assessment, reroute_on_placement_change
from ..rest.publish import publish_conformance
from ..rest.router import FhirRouter
from ..security import audit
from ..security.auth import AuthenticationError, Authenticator
from ..security.caller import Caller
from ..store.database import make_engine, prepare
from ..store.repository import Repository
from ..validation.terminology import default_terminology
from ..validation.validator import Validator
from . import formats
from .auth_routes import auth_routes
from .dashboard_routes import dashboard_routes
from .hardening import install_hardening

log = logging.getLogger("adapter.api")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
DOCUMENT_OPERATIONS = {"$import-form", "$la-notification", "$import-903"}


def create_app(settings: Settings) -> FastAPI:
    engine = make_engine(settings.database_url)
    prepare(engine)
    registry = SearchRegistry(settings.resource_types)
    repo = Repository(engine, registry, settings.base_url)
    router = FhirRouter(repo, settings, registry, Validator(default_terminology()))
    # Cross-cutting rules, applied to every write in its own transaction (see docs/architecture.md).
    router.before_write.append(task_lifecycle)
    router.before_write.append(consent_grantor)     # a Consent from someone who cannot give it is refused
    router.on_write.append(extract_on_submit)       # a completed assessment yields its findings
    router.on_write.append(quality_audit_on_submit)  # ... is audited against the checklist
    router.on_write.append(plan_next_assessment)    # ... and the next review is planned
    router.on_write.append(reroute_on_placement_change)  # a move re-routes open review requests
    router.on_write.append(ooa.on_write)            # out-of-area requests and results to partners
    subscriptions.install(router)                   # FHIR R4 rest-hook Subscriptions
    publish_conformance(router)
    authenticator = Authenticator(settings, default_registry(), dev=settings.dev_mode)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        # What start-up loaded (FHIR models, definitions, search parameters: most of the heap)
        # lives as long as the process: keeping it out of the collector's full passes takes
        # their pauses (tens of ms, the slowest responses under load) off the requests.
        gc.collect()
        gc.freeze()
        yield
        router.trail.close()  # store the audit events still queued
        engine.dispose()

    app = FastAPI(title="lac-fhir-adapter", description="FHIR R4 adapter for looked-after children's health",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.router = router
    app.state.engine = engine

    endpoint = FhirEndpoint(router, settings, authenticator)
    # Routes are matched in order, for every request: the FHIR mount right after the routes it
    # would otherwise swallow (/fhir/token, /fhir/openapi.json, ...), the dashboard after it.
    app.router.routes.extend(auth_routes(authenticator, settings.base_url))  # before the /fhir mount
    app.router.routes.append(Route("/fhir/openapi.json", _openapi_endpoint(router, settings)))
    app.router.routes.append(Route("/fhir", endpoint))  # the base itself: transactions, system search
    app.mount("/fhir", endpoint)
    app.router.routes.extend(dashboard_routes(router, authenticator, settings))
    install_hardening(app, settings)  # security headers, CORS, limits, rate limit, errors as OperationOutcome
    return app


class FhirEndpoint:
    """The ASGI endpoint under /fhir: every FHIR interaction enters here.

    A plain ASGI callable rather than a FastAPI route: FHIR routing is the router's
    job, and skipping FastAPI's per-route machinery halves the cost of a read.
    """

    def __init__(self, router: FhirRouter, settings: Settings, authenticator: Authenticator):
        self.router = router
        self.settings = settings
        self.authenticator = authenticator

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self.handle(request)
        if self.router.trail.backlogged:  # every outcome was audited: wait for the trail to catch up
            await self.router.trail.wait_for_room()
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        self.router.trail.touch()  # the audit trail's background work waits for a quiet moment
        params = list(parse_qsl(request.url.query, keep_blank_values=True))
        fmt, pretty = "json", False
        try:
            if request.method not in METHODS:
                raise FhirError(405, "not-supported", f"HTTP method {request.method} is not supported")
            fmt = formats.response_format(_first(params, "_format"), request.headers.get("accept"))
            pretty = _first(params, "_pretty") == "true"
            full = request.url.path
            prefix = full[: full.index("/fhir") + 5] if "/fhir" in full else ""
            base = self.settings.base_url or f"{request.url.scheme}://{request.url.netloc}{prefix}"
            path = full[len(prefix):]
            caller = self._caller(request, path)
            fhir_req = await _read_request(request, path, params, self.settings)
            address = request.client.host if request.client else None
            if self.settings.reads_on_event_loop and _is_read_by_id(fhir_req, self.router.types):
                # A read by id is one indexed lookup: handing it to a worker thread and back cost
                # more CPU than the read itself (bench/README.md), so it runs right here.
                result = self.router.handle(caller, fhir_req, base, address)
            else:
                result = await run_in_threadpool(self.router.handle, caller, fhir_req, base, address)
            return _respond(result, fmt, pretty, head=request.method == "HEAD")
        except FhirError as err:
            return _error(err, fmt, pretty)
        except Exception:  # noqa: BLE001 - a FHIR client must get an OperationOutcome, never HTML
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            err = FhirError(500, "exception", "internal server error; the request was not completed")
            return _error(err, fmt, pretty)


    def _caller(self, request: Request, path: str) -> Caller:
        """Who is asking; a request without a valid bearer token is refused (401) and audited.

        The CapabilityStatement is public, as SMART requires, so that clients can discover
        the token endpoint."""
        if path.strip("/") == "metadata" and request.method in ("GET", "HEAD"):
            return PUBLIC
        try:
            return self.authenticator.authenticate(request.headers.get("authorization"))
        except AuthenticationError as err:
            segments = [p for p in path.split("/") if p]
            name, operation = audit.interaction_of(request.method, segments)
            asked = [(segments[0], segments[1], None)] if len(segments) >= 2 and segments[0] in self.router.types \
                and not segments[1].startswith(("$", "_")) else []
            self.router.trail.record_later(audit.Interaction(
                UNAUTHENTICATED, name, request.method, path + (f"?{request.url.query}" if request.url.query else ""),
                err.status, outcome_text=err.diagnostics, operation=operation, resources=asked,
                address=request.client.host if request.client else None))
            raise


def _openapi_endpoint(router: FhirRouter, settings: Settings):
    """GET /fhir/openapi.json: an OpenAPI 3 description of this FHIR API, from the
    CapabilityStatement (public, like /fhir/metadata), for API tooling and fuzzers."""
    from fastapi.responses import JSONResponse

    from ..rest.capability import capability_statement
    from .openapi import openapi_document

    async def openapi(request: Request) -> Response:
        base = settings.base_url or f"{request.url.scheme}://{request.url.netloc}/fhir"
        return JSONResponse(openapi_document(capability_statement(router, base), router.registry))

    return openapi


PUBLIC = Caller(client_id="public")
UNAUTHENTICATED = Caller(client_id="unauthenticated")


def app_from_environment() -> FastAPI:
    """The app for one of several worker processes: settings from file and environment."""
    import os
    from dataclasses import replace

    from ..config import load_settings

    settings = load_settings()
    if os.environ.get("ADAPTER_DEV_MODE") == "1":  # set by `serve --dev` for its worker processes
        settings = replace(settings, dev_mode=True)
    return create_app(settings)


async def _read_request(request: Request, path: str, params: list, settings: Settings) -> FhirRequest:
    segments = [p for p in path.split("/") if p]
    body, raw = None, None
    content_type = request.headers.get("content-type")
    if request.method in ("POST", "PUT", "PATCH"):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise _too_large(settings)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > settings.max_body_bytes:
                raise _too_large(settings)
        kind = formats.media_type(content_type)
        if segments[-1:] and segments[-1] in DOCUMENT_OPERATIONS:
            raw = bytes(data)  # a partner document (form XML, notification, SSDA903), not FHIR
        elif kind == "application/x-www-form-urlencoded" and segments[-1:] == ["_search"]:
            params = params + parse_qsl(data.decode("utf-8", "replace"), keep_blank_values=True)
        elif data.strip():
            body = formats.parse_body(bytes(data), content_type)
    headers = {k.lower(): v for k, v in request.headers.items()}
    return FhirRequest(method=request.method, path=segments, params=params, headers=headers,
                       body=body, content_type=formats.media_type(content_type), raw=raw)


def _is_read_by_id(req: FhirRequest, types) -> bool:
    """GET/HEAD [type]/[id] or [type]/[id]/_history/[vid] (not AuditEvent: reading the trail
    first stores the queued events, which is no work for the event loop)."""
    path = req.path
    return (req.method in ("GET", "HEAD") and (len(path) == 2 or (len(path) == 4 and path[2] == "_history"))
            and path[0] in types and path[0] != "AuditEvent" and not path[1].startswith(("$", "_")))


def _too_large(settings: Settings) -> FhirError:
    return FhirError(413, "too-costly", f"request body larger than {settings.max_body_bytes} bytes")


def _first(params: list, name: str) -> str | None:
    return next((v for k, v in params if k == name), None)


def _respond(result: FhirResponse, fmt: str, pretty: bool, head: bool = False) -> Response:
    headers = dict(result.headers)
    media = formats.XML_CONTENT_TYPE if fmt == "xml" else formats.JSON_CONTENT_TYPE
    if result.content is not None:
        return Response(content=b"" if head else result.content, status_code=result.status, headers=headers,
                        media_type=result.media_type)
    if result.status == 304 or (result.resource is None and result.stored is None):
        return Response(status_code=result.status, headers=headers)
    if result.stored is not None and result.resource is None and fmt == "json" and not pretty:
        content = result.stored.content  # the stored bytes, served as they are
    else:
        content = formats.render(result.body_resource(), fmt, pretty)
    if head:
        return Response(status_code=result.status, headers=headers, media_type=media)
    return Response(content=content, status_code=result.status, headers=headers, media_type=media)


def _error(err: FhirError, fmt: str, pretty: bool) -> Response:
    headers = getattr(err, "headers", {})
    if callable(headers):
        headers = headers()
    try:
        content = formats.render(err.outcome(), fmt, pretty)
    except FhirError:
        fmt, content = "json", formats.render(err.outcome(), "json", pretty)
    media = formats.XML_CONTENT_TYPE if fmt == "xml" else formats.JSON_CONTENT_TYPE
    return Response(content=content, status_code=err.status, headers=headers, media_type=media)



