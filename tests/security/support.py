"""Test-only helpers: keys generated per test run, client assertions, and a tiny server that
mounts the auth routes plus one protected endpoint on loopback (uvicorn in a thread)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapter.api.auth_routes import auth_routes
from adapter.security.auth import AuthenticationError, Authenticator
from tests.support.server import free_port

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Key:
    """A freshly generated signing key (RS384 or ES384) with its public JWK."""

    def __init__(self, alg: str, kid: str | None = None, rsa_bits: int = 2048):
        self.alg = alg
        self.kid = kid or f"test-{alg.lower()}-{uuid.uuid4().hex[:8]}"
        if alg == "RS384":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
            jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = ec.generate_private_key(ec.SECP384R1())
            jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk = {**jwk, "kid": self.kid, "alg": alg, "use": "sig"}

    def pem(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())

    def assertion(self, client_id: str, aud: str, *, now: float | None = None, lifetime: int = 240,
                  headers: dict | None = None, **claims) -> str:
        now = int(time.time() if now is None else now)
        body = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + lifetime,
                "jti": str(uuid.uuid4())}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.private, algorithm=self.alg, headers={"kid": self.kid, **(headers or {})})


def token_form(assertion: str, scope: str = "system/*.rs", **extra) -> dict:
    return {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion, "scope": scope, **extra}


def make_app(authenticator: Authenticator, public_base=None) -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        try:
            caller = authenticator.authenticate(request.headers.get("authorization"))
        except AuthenticationError as err:
            return JSONResponse(err.outcome(), status_code=err.status, headers=err.headers)
        return JSONResponse({"client_id": caller.client_id, "organisation": caller.organisation,
                             "role": caller.role, "scopes": sorted(caller.scopes), "serves": sorted(caller.serves),
                             "user": caller.user})

    return Starlette(routes=[*auth_routes(authenticator, public_base), Route("/fhir/whoami", whoami)])


@contextmanager
def serve(app) -> Iterator[str]:
    """Run `app` on a free loopback port; yields http://127.0.0.1:PORT."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
