"""HTTP routes of the dashboard: the page, its data as JSON, and a sign-in form.

    GET  /dashboard[?month=YYYY-MM]     the page (HTML)
    GET  /dashboard/data.json           the same data as JSON
    GET  /dashboard/sign-in             a form taking an access token
    POST /dashboard/sign-in             checks the token, sets the cookie, back to /dashboard
    POST /dashboard/sign-out            clears the cookie

Callers authenticate as on the FHIR API: `Authorization: Bearer <token>`, or the token kept in
the `lac_dashboard` cookie (HttpOnly, SameSite=Strict, path /dashboard, Secure over https) that
the sign-in form sets. Without credentials the page redirects to the sign-in form and the JSON
is 401; a token lacking the scopes is 403. The data is the operation `Measure/$dashboard`
(rest/dashboard_op.py), run through the router like any FHIR request: same scopes, same
access restriction, same audit.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..config import Settings
from ..dashboard import render
from ..fhir.errors import FhirError
from ..rest.messages import FhirRequest
from ..security import audit
from ..security.auth import AuthenticationError, Authenticator
from ..security.caller import Caller
from .auth_routes import request_fhir_base

COOKIE = "lac_dashboard"
COOKIE_PATH = "/dashboard"
COOKIE_SECONDS = 8 * 3600
MAX_FORM_BYTES = 16 * 1024
PARAMS = ("month", "asOf")
UNAUTHENTICATED = Caller(client_id="unauthenticated")


def dashboard_routes(router, authenticator: Authenticator, settings: Settings) -> list[Route]:
    from .app import _error  # the FHIR API's OperationOutcome responses (401 with WWW-Authenticate, 403)

    def credentials(request: Request) -> str | None:
        header = request.headers.get("authorization")
        if header:
            return header
        token = request.cookies.get(COOKIE)
        return f"Bearer {token}" if token else None

    def refuse(request: Request, err: AuthenticationError) -> None:
        """Audit a refused request, as the FHIR endpoint does."""
        router.trail.record_later(audit.Interaction(
            UNAUTHENTICATED, "operation", request.method, request.url.path.lstrip("/"), err.status,
            outcome_text=err.diagnostics, operation="$dashboard",
            address=request.client.host if request.client else None))

    async def load(request: Request) -> tuple[dict | None, Response | None]:
        """The data for the caller, or the response refusing them."""
        header = credentials(request)
        try:
            caller = authenticator.authenticate(header)
        except AuthenticationError as err:
            refuse(request, err)
            if request.url.path.endswith(".json") or request.headers.get("authorization"):
                return None, _error(err, "json", False)
            response = RedirectResponse("/dashboard/sign-in", status_code=303)
            if request.cookies.get(COOKIE):
                response.delete_cookie(COOKIE, path=COOKIE_PATH)  # expired or revoked
            return None, response
        params = [(k, v) for k, v in request.query_params.multi_items() if k in PARAMS]
        base = settings.base_url or request_fhir_base(request)
        fhir_req = FhirRequest(method="GET", path=["Measure", "$dashboard"], params=params,
                               headers={"accept": "application/json"})
        address = request.client.host if request.client else None
        try:
            result = await run_in_threadpool(router.handle, caller, fhir_req, base, address)
        except FhirError as err:
            return None, _error(err, "json", False)
        return json.loads(result.content), None

    async def page(request: Request) -> Response:
        data, refused = await load(request)
        return refused or HTMLResponse(render.page(data))

    async def data_json(request: Request) -> Response:
        data, refused = await load(request)
        return refused or Response(json.dumps(data), media_type="application/json")

    async def sign_in_form(request: Request) -> Response:
        return HTMLResponse(render.sign_in())

    async def sign_in(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return HTMLResponse(render.sign_in("That was too long to be an access token."))
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        token = (form.get("token") or "").strip()
        try:
            authenticator.authenticate(f"Bearer {token}")
        except AuthenticationError as err:
            refuse(request, err)
            return HTMLResponse(render.sign_in("That access token was not accepted."))
        response = RedirectResponse("/dashboard", status_code=303)
        response.set_cookie(COOKIE, token, max_age=COOKIE_SECONDS, path=COOKIE_PATH, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    async def sign_out(request: Request) -> Response:
        response = RedirectResponse("/dashboard/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
        return response

    return [Route("/dashboard", page, methods=["GET"]),
            Route("/dashboard/data.json", data_json, methods=["GET"]),
            Route("/dashboard/sign-in", sign_in_form, methods=["GET"]),
            Route("/dashboard/sign-in", sign_in, methods=["POST"]),
            Route("/dashboard/sign-out", sign_out, methods=["POST"])]
