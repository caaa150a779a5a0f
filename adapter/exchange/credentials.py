"""How our outbox authenticates to a partner: the Authorization header for a delivery.

Per the partner's `outbound_auth` in config/partners.toml:
- type "smart": SMART Backend Services as a client. We sign a client assertion with our private
  key (`key_file`, PEM; iss = sub = client_id, aud = token_url, exp = now + 300 s, a fresh jti,
  `kid` in the header), POST it to the partner's token endpoint with `requests`, and reuse the
  access token until shortly before it expires (thread-safe; one fetch at a time per partner).
- type "bearer": a static token from an environment variable (`token_env`) or a file (`token_file`).
- no outbound_auth: no header.

Tokens and keys are never logged and never part of an exception message.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jwt
import requests

from ..config import PROJECT_ROOT
from .partners import OutboundAuth, Partner

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_SECONDS = 300
REFRESH_MARGIN_SECONDS = 30  # get a new token this long before the old one expires
TIMEOUT_SECONDS = 30.0


class CredentialsError(Exception):
    """We cannot authenticate to the partner (missing secret, token endpoint refused or down).
    `retryable` says whether trying the delivery again later may help."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


@dataclass
class _Cached:
    token: str
    expires: float  # epoch seconds after which it is not used any more


_cache: dict[tuple, _Cached] = {}
_locks: dict[tuple, threading.Lock] = {}
_guard = threading.Lock()


def clear_cache() -> None:
    """Forget all cached access tokens (tests; after a key rotation)."""
    with _guard:
        _cache.clear()


def outbound_headers(partner: Partner, now: float | datetime | None = None,
                     session: requests.Session | None = None, timeout: float = TIMEOUT_SECONDS) -> dict[str, str]:
    """`{"Authorization": "Bearer ..."}` for a delivery to `partner`, or {} if it needs none."""
    auth = partner.outbound_auth
    if auth is None:
        return {}
    if isinstance(now, datetime):
        now = now.timestamp()
    if auth.type == "bearer":
        return {"Authorization": f"Bearer {_static_token(auth, partner)}"}
    if auth.type == "smart":
        return {"Authorization": f"Bearer {_smart_token(auth, partner, now, session, timeout)}"}
    raise CredentialsError(f"partner {partner.ods}: unknown outbound_auth type {auth.type!r}", retryable=False)


def _path(value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else PROJECT_ROOT / p


def _static_token(auth: OutboundAuth, partner: Partner) -> str:
    if auth.token_env:
        token = os.environ.get(auth.token_env, "").strip()
        if not token:
            raise CredentialsError(f"partner {partner.ods}: environment variable {auth.token_env} is not set")
        return token
    try:
        token = _path(auth.token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CredentialsError(f"partner {partner.ods}: token file cannot be read ({exc.strerror})") from None
    if not token:
        raise CredentialsError(f"partner {partner.ods}: token file {auth.token_file} is empty")
    return token


def client_assertion(auth: OutboundAuth, now: float | None = None) -> str:
    """Our signed client assertion for `auth.token_url`."""
    try:
        key = _path(auth.key_file).read_bytes()
    except OSError as exc:
        raise CredentialsError(f"our private key file cannot be read ({exc.strerror})", retryable=False) from None
    now = int(time.time() if now is None else now)
    claims = {"iss": auth.client_id, "sub": auth.client_id, "aud": auth.token_url,
              "iat": now, "exp": now + ASSERTION_SECONDS, "jti": str(uuid.uuid4())}
    headers = {"typ": "JWT"}
    if auth.kid:
        headers["kid"] = auth.kid
    try:
        return jwt.encode(claims, key, algorithm=auth.alg, headers=headers)
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise CredentialsError(f"our private key cannot sign {auth.alg} ({type(exc).__name__})",
                               retryable=False) from None


def _smart_token(auth: OutboundAuth, partner: Partner, now: float | None, session, timeout: float) -> str:
    key = (partner.ods, auth.token_url, auth.client_id, auth.scope)
    with _guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # one fetch at a time per partner; others wait and reuse its token
        clock = time.time() if now is None else now
        with _guard:
            cached = _cache.get(key)
        if cached is not None and clock < cached.expires:
            return cached.token
        token, lifetime = _fetch(auth, partner, clock, session, timeout)
        margin = min(REFRESH_MARGIN_SECONDS, lifetime / 2)
        with _guard:
            _cache[key] = _Cached(token, clock + lifetime - margin)
        return token


def _fetch(auth: OutboundAuth, partner: Partner, now: float, session, timeout: float) -> tuple[str, float]:
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(auth, now), "scope": auth.scope}
    post = (session or requests).post
    try:
        response = post(auth.token_url, data=form, headers={"Accept": "application/json"}, timeout=timeout)
    except requests.RequestException as exc:
        raise CredentialsError(f"partner {partner.ods}: token endpoint unreachable ({type(exc).__name__})") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        error = body.get("error") if isinstance(body, dict) else None
        description = body.get("error_description") if isinstance(body, dict) else None
        retryable = response.status_code >= 500 or response.status_code == 429
        raise CredentialsError(f"partner {partner.ods}: token endpoint answered {response.status_code}"
                               + (f" {error}: {str(description)[:200]}" if error else ""), retryable=retryable)
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token or str(body.get("token_type", "")).lower() != "bearer":
        raise CredentialsError(f"partner {partner.ods}: token endpoint gave no bearer access_token")
    try:
        lifetime = float(body.get("expires_in", 60))
    except (TypeError, ValueError):
        lifetime = 60.0
    return token, max(lifetime, 1.0)
