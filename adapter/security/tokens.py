"""Our own access tokens: short-lived HS256 JWTs that carry the Caller.

Issued by the token endpoint (auth.py) after a partner's client assertion checks out; verified on
every FHIR request. The key is a server secret: env ADAPTER_TOKEN_SECRET, else the file
`[auth] token_secret_file` (default var/token-secret), created with mode 0600 and random content
on first use, so that several server processes on one machine accept each other's tokens.
The secret is never logged and never part of Settings.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt

from ..config import PROJECT_ROOT, Settings
from .caller import Caller

ALGORITHM = "HS256"
SECRET_ENV = "ADAPTER_TOKEN_SECRET"
MIN_SECRET_BYTES = 32


class InvalidToken(Exception):
    """An access token that is malformed, expired, badly signed or not ours. The message is safe to
    show to the client (it never contains the token)."""


def load_secret(settings: Settings) -> bytes:
    """The HS256 key: env ADAPTER_TOKEN_SECRET, else the secret file (created if missing)."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        secret = from_env.encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"{SECRET_ENV} must be at least {MIN_SECRET_BYTES} characters long")
        return secret
    path = Path(settings.token_secret_file)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    return secret_file(path)


def secret_file(path: Path) -> bytes:
    """Read the secret file, or create it (0600, 64 random hex characters) if it does not exist.

    Creation is atomic: the content is written to a private temporary file which is then linked
    into place, so a concurrent process either wins the link or reads the winner's complete file.
    """
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".token-secret-")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
    finally:
        os.unlink(tmp)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    secret = path.read_bytes().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path}: the token secret must be at least {MIN_SECRET_BYTES} bytes")
    return secret


class TokenService:
    """Issues and verifies access tokens."""

    def __init__(self, secret: bytes, issuer: str, lifetime_seconds: int = 300, leeway_seconds: int = 30,
                 clock: Callable[[], float] = time.time):
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.issuer = issuer
        self.lifetime = int(lifetime_seconds)
        self.leeway = int(leeway_seconds)
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, clock: Callable[[], float] = time.time) -> TokenService:
        return cls(load_secret(settings), settings.token_issuer, settings.token_lifetime_seconds,
                   settings.clock_skew_seconds, clock)

    def __repr__(self) -> str:  # never show the secret
        return f"TokenService(issuer={self.issuer!r}, lifetime={self.lifetime})"

    def issue(self, caller: Caller) -> tuple[str, int]:
        """A signed access token for `caller` and its lifetime in seconds."""
        now = int(self.clock())
        claims = {
            "iss": self.issuer,
            "sub": caller.client_id,
            "org": caller.organisation,
            "role": caller.role,
            "scope": " ".join(sorted(caller.scopes)),
            "serves": sorted(caller.serves),
            "iat": now,
            "exp": now + self.lifetime,
            "jti": str(uuid.uuid4()),
        }
        if caller.user:
            claims["user"] = caller.user
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM, headers={"typ": "at+jwt"}), self.lifetime

    def verify(self, token: str) -> Caller:
        """The Caller an access token stands for; InvalidToken if it is not valid now."""
        try:
            # times are checked below against self.clock (pyjwt would use the wall clock)
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], issuer=self.issuer,
                                options={"require": ["iss", "sub", "exp", "iat", "jti"], "verify_aud": False,
                                         "verify_exp": False, "verify_iat": False, "verify_nbf": False})
        except jwt.InvalidIssuerError:
            raise InvalidToken("the access token was not issued by this server") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("the access token's signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"the access token is not valid: {_safe(exc)}") from None
        exp, iat = claims["exp"], claims["iat"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (exp, iat)):
            raise InvalidToken("the access token's exp and iat must be numbers")
        now = self.clock()
        if now > exp + self.leeway:
            raise InvalidToken("the access token has expired")
        if iat > now + self.leeway:  # a clock problem, or not one of ours
            raise InvalidToken("the access token is not valid yet")
        if claims.get("role") == "system":
            raise InvalidToken("the access token claims a reserved role")
        scope = claims.get("scope") or ""
        serves = claims.get("serves") or []
        if not isinstance(scope, str) or not isinstance(serves, list):
            raise InvalidToken("the access token's claims are malformed")
        return Caller(client_id=str(claims["sub"]), organisation=claims.get("org"),
                      scopes=frozenset(scope.split()), user=claims.get("user"), role=claims.get("role"),
                      serves=frozenset(str(s) for s in serves))


def _safe(exc: Exception) -> str:
    """pyjwt's messages name claims and reasons, never the token; keep them short anyway."""
    return str(exc)[:200]
