"""SMART Backend Services authentication: the token endpoint's logic and bearer token checks.

A partner registered in config/partners.toml gets an access token by POSTing to /auth/token
(OAuth2 client credentials, RFC 6749 section 4.4) a JWT client assertion (RFC 7523,
private_key_jwt) signed with RS384 or ES384 by a key in its JWKS. The assertion must name the
partner's client_id as `iss` and `sub`, the token endpoint URL as `aud`, expire within
`assertion_max_seconds` and carry a `jti` not seen before. The granted scopes are the requested
ones cut down to the partner's `scopes` (scopes.narrow). The access token (tokens.py) carries
the Caller: client, organisation, role, serves and scopes from the registry.

Replay protection keeps the `jti`s of accepted assertions in memory until they expire: it holds
per server process. Several processes behind one token endpoint would each accept one replay
of an assertion within its (at most five-minute) lifetime; a shared store would close that.

Dev mode (`serve --dev` only) also accepts the static tokens of [auth.dev_tokens].
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable

import jwt

from ..config import Settings
from ..exchange.partners import Partner, Registry
from ..fhir.errors import FhirError
from . import scopes as smart_scopes
from .caller import Caller
from .tokens import InvalidToken, TokenService

log = logging.getLogger(__name__)

REALM = "lac-fhir-adapter"
GRANT_TYPE = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS384", "ES384")
MAX_ASSERTION_BYTES = 16 * 1024
MIN_RSA_BITS = 2048
_KEY_TYPES = {"RS384": ("RSA", None), "ES384": ("EC", "P-384")}


class OAuthError(Exception):
    """An OAuth2 error response (RFC 6749 section 5.2): `status` and the JSON `body`."""

    def __init__(self, error: str, description: str, status: int | None = None):
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status or (401 if error == "invalid_client" else 400)

    @property
    def body(self) -> dict:
        return {"error": self.error, "error_description": self.description}


class AuthenticationError(FhirError):
    """No valid bearer token: 401 with an OperationOutcome (code `login`) and WWW-Authenticate."""

    def __init__(self, message: str, error: str | None = "invalid_token"):
        super().__init__(401, "login", message)
        self.message = message
        value = f'Bearer realm="{REALM}"'
        if error:  # RFC 6750 section 3.1: no error code when the request had no credentials at all
            value += f', error="{error}", error_description="{_quoted(message)}"'
        self.www_authenticate = value

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.www_authenticate}


def _quoted(text: str) -> str:
    return "".join(c for c in text if c not in '"\\' and 0x20 <= ord(c) < 0x7F)


class ReplayCache:
    """The `jti`s of accepted client assertions, each kept until its assertion expires."""

    def __init__(self, max_entries: int = 100_000):
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def first_use(self, client_id: str, jti: str, expires: float, now: float) -> bool:
        """Record the jti; False if it was already used and has not expired yet."""
        key = (client_id, jti)
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and seen >= now:
                return False
            if len(self._seen) >= self.max_entries:
                self._seen = {k: v for k, v in self._seen.items() if v >= now}
                if len(self._seen) >= self.max_entries:
                    raise OAuthError("invalid_request", "too many token requests; try again later", 429)
            self._seen[key] = expires
            return True


class Authenticator:
    """Issues access tokens to registered partners and turns bearer tokens into Callers."""

    def __init__(self, settings: Settings, registry: Registry, dev: bool | None = None,
                 tokens: TokenService | None = None, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.registry = registry
        self.dev = settings.dev_mode if dev is None else dev
        self.clock = clock
        self.tokens = tokens or TokenService.from_settings(settings, clock)
        self.replay = ReplayCache()
        self._dev_callers: list[tuple[bytes, Caller]] = []
        if self.dev:
            self._dev_callers = [(t.token.encode(), self._dev_caller(t)) for t in settings.dev_tokens]

    def __repr__(self) -> str:
        return f"Authenticator(dev={self.dev}, issuer={self.tokens.issuer!r})"

    # -- the token endpoint ---------------------------------------------------------------
    def token_response(self, form: dict[str, str], token_url: str) -> dict:
        """The JSON of a successful token response; OAuthError otherwise."""
        grant = form.get("grant_type")
        if not grant:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant != GRANT_TYPE:
            raise OAuthError("unsupported_grant_type", f"only grant_type={GRANT_TYPE} is supported")
        assertion_type = form.get("client_assertion_type")
        assertion = form.get("client_assertion")
        if not assertion_type or not assertion:
            raise OAuthError("invalid_request", "client_assertion_type and client_assertion are required "
                                                "(SMART Backend Services, private_key_jwt)")
        if assertion_type != ASSERTION_TYPE:
            raise OAuthError("invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}")
        if len(assertion) > MAX_ASSERTION_BYTES:
            raise OAuthError("invalid_request", "client_assertion is too large")
        requested = form.get("scope", "")
        if not requested.strip():
            raise OAuthError("invalid_scope", "scope is required")
        partner = self._authenticate_client(assertion, token_url)
        try:
            smart_scopes.parse_scopes(requested)
            granted = smart_scopes.narrow(requested, partner.scopes)
        except smart_scopes.ScopeError as exc:
            raise OAuthError("invalid_scope", str(exc)) from None
        caller = Caller(client_id=partner.client_id, organisation=partner.ods, scopes=granted,
                        role=partner.role or None, serves=frozenset(partner.serves))
        token, lifetime = self.tokens.issue(caller)
        log.info("access token issued to client %s (%s) for scope %s", partner.client_id, partner.ods,
                 " ".join(sorted(granted)))
        return {"access_token": token, "token_type": "bearer", "expires_in": lifetime,
                "scope": " ".join(sorted(granted))}

    def _authenticate_client(self, assertion: str, token_url: str) -> Partner:
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise OAuthError("invalid_client", "client_assertion is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            raise OAuthError("invalid_client", f"client_assertion must be signed with "
                                               f"{' or '.join(ASSERTION_ALGORITHMS)}, not {alg!r}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise OAuthError("invalid_client", "client_assertion header needs a kid")
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or not client_id:
            raise OAuthError("invalid_client", "client_assertion needs iss (the client_id)")
        partner = self.registry.by_client_id(client_id)
        if partner is None:
            raise OAuthError("invalid_client", f"client {client_id!r} is not registered")
        key = self._key(partner, kid, alg)
        now = self.clock()
        skew = self.settings.clock_skew_seconds
        try:
            # times are checked below against self.clock (pyjwt would use the wall clock)
            claims = jwt.decode(
                assertion, key, algorithms=[alg], audience=token_url, issuer=client_id,
                options={"require": ["iss", "sub", "aud", "exp", "jti"],
                         "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidAudienceError:
            raise OAuthError("invalid_client", f"client_assertion aud must be the token endpoint {token_url}") from None
        except jwt.InvalidSignatureError:
            raise OAuthError("invalid_client", "client_assertion signature does not verify with key "
                                               f"{kid!r}") from None
        except jwt.InvalidTokenError as exc:
            raise OAuthError("invalid_client", f"client_assertion is not valid: {str(exc)[:200]}") from None
        if claims["sub"] != client_id:
            raise OAuthError("invalid_client", "client_assertion iss and sub must both be the client_id")
        exp = claims["exp"]
        times = [claims.get(k) for k in ("exp", "iat", "nbf") if k in claims]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in times):
            raise OAuthError("invalid_client", "client_assertion exp, iat and nbf must be numbers")
        if now > exp + skew:
            raise OAuthError("invalid_client", "client_assertion has expired")
        if claims.get("iat", now) > now + skew or claims.get("nbf", now) > now + skew:
            raise OAuthError("invalid_client", "client_assertion is not valid yet (iat or nbf in the future)")
        if exp > now + self.settings.assertion_max_seconds + skew:
            raise OAuthError("invalid_client", f"client_assertion exp must be at most "
                                               f"{self.settings.assertion_max_seconds} seconds ahead")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise OAuthError("invalid_client", "client_assertion jti must be a non-empty string")
        if not self.replay.first_use(client_id, jti, exp + skew, now):
            raise OAuthError("invalid_client", "client_assertion jti has already been used")
        return partner

    def _key(self, partner: Partner, kid: str, alg: str):
        try:
            jwks = partner.load_jwks()
        except (OSError, ValueError) as exc:
            log.error("the JWKS of partner %s cannot be read: %s", partner.ods, exc)
            raise OAuthError("invalid_client", "the client's registered keys cannot be read") from None
        kty, crv = _KEY_TYPES[alg]
        for jwk in jwks.get("keys") or []:
            if not isinstance(jwk, dict) or jwk.get("kid") != kid:
                continue
            if "d" in jwk:
                log.error("the JWKS of partner %s holds a private key (kid %s): ignored", partner.ods, kid)
                continue
            if jwk.get("kty") != kty or (crv and jwk.get("crv") != crv):
                raise OAuthError("invalid_client", f"key {kid!r} is not a {kty}{' ' + crv if crv else ''} "
                                                   f"key for {alg}")
            if jwk.get("alg") not in (None, alg) or jwk.get("use") not in (None, "sig"):
                raise OAuthError("invalid_client", f"key {kid!r} is not registered for {alg} signatures")
            try:
                key = jwt.PyJWK(jwk, algorithm=alg).key
            except (jwt.PyJWKError, ValueError, TypeError) as exc:
                log.error("partner %s key %s is unusable: %s", partner.ods, kid, exc)
                raise OAuthError("invalid_client", f"key {kid!r} is unusable") from None
            if kty == "RSA" and key.key_size < MIN_RSA_BITS:
                raise OAuthError("invalid_client", f"key {kid!r} is shorter than {MIN_RSA_BITS} bits")
            return key
        raise OAuthError("invalid_client", f"no key with kid {kid!r} is registered for this client")

    # -- bearer tokens on FHIR requests --------------------------------------------------
    def authenticate(self, authorization_header: str | None) -> Caller:
        """The Caller of a request's Authorization header; AuthenticationError (401) if none is valid."""
        if not authorization_header or not authorization_header.strip():
            raise AuthenticationError("authentication required: send Authorization: Bearer <access token> "
                                      "(SMART Backend Services; token endpoint /auth/token)", error=None)
        scheme, _, token = authorization_header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise AuthenticationError("the Authorization header must be 'Bearer <access token>'")
        if self.dev:
            caller = self._dev_token(token)
            if caller is not None:
                return caller
        if token.count(".") != 2:
            raise AuthenticationError("not a valid access token" + ("" if self.dev else
                                      " (static development tokens are accepted only by `serve --dev`)"))
        try:
            caller = self.tokens.verify(token)
        except InvalidToken as exc:
            raise AuthenticationError(str(exc)) from None
        if self.registry.by_client_id(caller.client_id) is None:
            raise AuthenticationError("the access token's client is no longer registered")
        return caller

    def _dev_token(self, token: str) -> Caller | None:
        given = token.encode()
        found = None
        for secret, caller in self._dev_callers:  # compare them all, in constant time each
            if hmac.compare_digest(secret, given):
                found = caller
        return found

    def _dev_caller(self, dev) -> Caller:
        for scope in dev.scopes:
            smart_scopes.parse_scope(scope)  # ScopeError (a ValueError) on a bad config
        org = self.registry.organisation(dev.organisation)
        role = (org.role if org and org.role else dev.role) or None
        if role == "system":
            raise ValueError("dev tokens cannot have the reserved role 'system'")
        serves = org.serves if org and org.serves else dev.serves
        client_id = dev.client_id or (org.client_id if org else dev.organisation)
        return Caller(client_id=client_id, organisation=dev.organisation, scopes=frozenset(dev.scopes),
                      user=dev.user, role=role, serves=frozenset(serves))
