"""HTTP routes of SMART Backend Services: the token endpoint and the SMART configuration.

    routes = auth_routes(authenticator, settings.base_url)   # mounted before the FHIR catch-all

`POST /auth/token` takes an application/x-www-form-urlencoded token request and answers with
OAuth2 JSON (no-store). `GET /fhir/.well-known/smart-configuration` advertises it. The token URL
(the `aud` a client assertion must carry) is the configured FHIR base with its last path segment
replaced by `auth/token` (base `https://h/lac/fhir` -> `https://h/lac/auth/token`), else derived
from the request the way the FHIR endpoint derives its base.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..security import scopes as smart_scopes
from ..security.auth import ASSERTION_ALGORITHMS, Authenticator, OAuthError

TOKEN_PATH = "/auth/token"
SMART_CONFIGURATION_PATH = "/fhir/.well-known/smart-configuration"
MAX_FORM_BYTES = 64 * 1024
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

PublicBase = str | None | Callable[[Request], str]


def token_url_for(fhir_base: str) -> str:
    """The token endpoint next to a FHIR base: `.../fhir` -> `.../auth/token`."""
    root = fhir_base.rstrip("/").removesuffix("/fhir")
    return f"{root}{TOKEN_PATH}"


def request_fhir_base(request: Request) -> str:
    """The FHIR base as this request reached us (as adapter/api/app.py computes it)."""
    path = request.url.path
    prefix = path[: path.index("/fhir") + 5] if "/fhir" in path else request.scope.get("root_path", "") + "/fhir"
    return f"{request.url.scheme}://{request.url.netloc}{prefix}"


def _fhir_base(public_base: PublicBase, request: Request) -> str:
    if callable(public_base):
        return public_base(request)
    return public_base or request_fhir_base(request)


def _token_url(public_base: PublicBase, request: Request) -> str:
    if public_base is None:
        # the absolute URL of this endpoint exactly as the client called it
        return f"{request.url.scheme}://{request.url.netloc}{request.url.path}"
    return token_url_for(_fhir_base(public_base, request))


def smart_configuration(token_url: str) -> dict:
    """The body of /.well-known/smart-configuration (SMART App Launch 2.x, backend services)."""
    return {
        "token_endpoint": token_url,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": list(smart_scopes.SCOPES_SUPPORTED),
        "capabilities": ["client-confidential-asymmetric", "permission-v2", "permission-v1"],
    }


def capability_security(token_url: str, cors: bool = False) -> dict:
    """CapabilityStatement.rest.security for SMART Backend Services."""
    return {
        "cors": cors,
        "service": [{
            "coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}],
            "text": "OAuth2 client credentials with a signed JWT client assertion (SMART Backend Services)",
        }],
        "description": "Every request needs Authorization: Bearer <access token>; get a token from the "
                       "token endpoint with a client assertion signed (RS384 or ES384) by a key registered "
                       "for your organisation. Scopes: SMART v2 (system/Task.cruds) or v1 (system/*.read).",
        "extension": [{"url": OAUTH_URIS, "extension": [{"url": "token", "valueUri": token_url}]}],
    }


def auth_routes(authenticator: Authenticator, public_base: PublicBase = None) -> list[Route]:
    """The token endpoint and the SMART configuration, as Starlette routes.

    `public_base` is the configured public FHIR base (settings.base_url), a function of the request
    returning the FHIR base, or None to take everything from the request.
    """

    async def token(request: Request) -> JSONResponse:
        try:
            form = await _read_form(request)
            token_url = _token_url(public_base, request)
            body = await run_in_threadpool(authenticator.token_response, form, token_url)
        except OAuthError as err:
            return JSONResponse(err.body, status_code=err.status, headers=_NO_STORE)
        return JSONResponse(body, headers=_NO_STORE)

    async def configuration(request: Request) -> JSONResponse:
        return JSONResponse(smart_configuration(token_url_for(_fhir_base(public_base, request))))

    return [Route(TOKEN_PATH, token, methods=["POST"]),
            Route(SMART_CONFIGURATION_PATH, configuration, methods=["GET"])]


async def _read_form(request: Request) -> dict[str, str]:
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the token request must be application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", "the token request is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "the token request is not UTF-8") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:  # RFC 6749 section 3.2: parameters must not be repeated
            raise OAuthError("invalid_request", f"parameter {name} is repeated")
        form[name] = value
    return form
