"""The token endpoint (SMART Backend Services) and bearer token checks, over real HTTP."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace

import jwt
import pytest
import requests

from adapter.api.auth_routes import capability_security, smart_configuration
from adapter.config import load_settings
from adapter.exchange.partners import Partner, Registry
from adapter.security.auth import AuthenticationError, Authenticator, OAuthError
from tests.security.support import Key, make_app, serve, token_form

LA = "LA-TEST-1"


@pytest.fixture(scope="module")
def keys():
    return {"RS384": Key("RS384"), "ES384": Key("ES384"), "other": Key("ES384")}


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return replace(load_settings(), token_secret_file=str(tmp_path_factory.mktemp("secret") / "token-secret"),
                   dev_mode=False, dev_tokens=())


@pytest.fixture(scope="module")
def registry(keys, tmp_path_factory):
    jwks_file = tmp_path_factory.mktemp("jwks") / "trust.jwks.json"
    jwks_file.write_text(json.dumps({"keys": [keys["ES384"].jwk]}))
    partners = {
        "RTRUST": Partner(ods="RTRUST", name="a trust", role="hospital-trust", client_id="trust-client",
                          jwks={"keys": [keys["RS384"].jwk, keys["ES384"].jwk]},
                          scopes=("system/*.rs", "system/Task.cru"), serves=(LA,)),
        "RFILE": Partner(ods="RFILE", name="keys in a file", role="ooa-trust", jwks_file=jwks_file,
                         scopes=("system/*.cruds",)),
        "RNONE": Partner(ods="RNONE", name="no scopes", role="commissioner", jwks={"keys": [keys["ES384"].jwk]}),
    }
    return Registry(self_ods="RSELF", partners=partners,
                    me=Partner(ods="RSELF", name="us", role="community-trust", serves=(LA,)))


@pytest.fixture(scope="module")
def authenticator(settings, registry):
    return Authenticator(settings, registry)


@pytest.fixture(scope="module")
def server(authenticator):
    with serve(make_app(authenticator)) as root:
        yield root


@pytest.fixture()
def token_url(server):
    return f"{server}/auth/token"


def post_token(server, form, **kw):
    return requests.post(f"{server}/auth/token", data=form, timeout=10, **kw)


def whoami(server, token):
    return requests.get(f"{server}/fhir/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=10)


# -- the happy path ------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_token_request_and_use(server, token_url, keys, alg):
    assertion = keys[alg].assertion("trust-client", token_url)
    response = post_token(server, token_form(assertion, "system/*.rs system/Task.cru"))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 300
    assert set(body["scope"].split()) == {"system/*.rs", "system/Task.cru"}
    me = whoami(server, body["access_token"])
    assert me.status_code == 200, me.text
    assert me.json() == {"client_id": "trust-client", "organisation": "RTRUST", "role": "hospital-trust",
                         "scopes": ["system/*.rs", "system/Task.cru"], "serves": [LA], "user": None}


def test_access_token_claims(server, token_url, keys, settings):
    body = post_token(server, token_form(keys["ES384"].assertion("trust-client", token_url))).json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["iss"] == settings.token_issuer and claims["sub"] == "trust-client"
    assert claims["org"] == "RTRUST" and claims["role"] == "hospital-trust" and claims["serves"] == [LA]
    assert claims["scope"] == "system/*.rs" and claims["exp"] - claims["iat"] == 300 and claims["jti"]
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"


def test_jwks_from_file_and_scope_narrowed(server, token_url, keys):
    body = post_token(server, token_form(keys["ES384"].assertion("RFILE", token_url), "system/*.read")).json()
    assert body["scope"] == "system/*.read"
    assert whoami(server, body["access_token"]).json()["role"] == "ooa-trust"
    # the trust may have system/*.rs and system/Task.cru: asking for everything grants that much
    body = post_token(server, token_form(keys["ES384"].assertion("trust-client", token_url), "system/*.cruds")).json()
    assert set(body["scope"].split()) == {"system/*.rs", "system/Task.cru"}


# -- refusals ------------------------------------------------------------------------------
def _hs256(token_url):
    now = int(time.time())
    return jwt.encode({"iss": "trust-client", "sub": "trust-client", "aud": token_url, "exp": now + 60,
                       "jti": str(uuid.uuid4())}, "a-shared-secret-that-is-long-enough!!", algorithm="HS256",
                      headers={"kid": "x"})


def _none(token_url):
    now = int(time.time())
    return jwt.encode({"iss": "trust-client", "sub": "trust-client", "aud": token_url, "exp": now + 60,
                       "jti": str(uuid.uuid4())}, None, algorithm="none", headers={"kid": "x"})


def _rs256(keys, token_url):
    now = int(time.time())
    return jwt.encode({"iss": "trust-client", "sub": "trust-client", "aud": token_url, "exp": now + 60,
                       "jti": str(uuid.uuid4())}, keys["RS384"].private, algorithm="RS256",
                      headers={"kid": keys["RS384"].kid})


def _other_key_same_kid(keys, token_url):
    impostor = keys["other"]
    now = int(time.time())
    return jwt.encode({"iss": "trust-client", "sub": "trust-client", "aud": token_url, "exp": now + 60,
                       "jti": str(uuid.uuid4())}, impostor.private, algorithm="ES384",
                      headers={"kid": keys["ES384"].kid})


REFUSALS = {
    "HS256": (lambda k, u: _hs256(u), "RS384 or ES384"),
    "none": (lambda k, u: _none(u), "RS384 or ES384"),
    "RS256": (_rs256, "RS384 or ES384"),
    "unknown client": (lambda k, u: k["ES384"].assertion("nobody", u), "not registered"),
    "iss is not sub": (lambda k, u: k["ES384"].assertion("trust-client", u, sub="RFILE"), "iss and sub"),
    "wrong aud": (lambda k, u: k["ES384"].assertion("trust-client", "https://elsewhere.example/auth/token"), "aud"),
    "no aud": (lambda k, u: k["ES384"].assertion("trust-client", None), "aud"),
    "expired": (lambda k, u: k["ES384"].assertion("trust-client", u, now=time.time() - 600), "expired"),
    "exp too far": (lambda k, u: k["ES384"].assertion("trust-client", u, lifetime=3600), "at most 300 seconds"),
    "no exp": (lambda k, u: k["ES384"].assertion("trust-client", u, exp=None), "exp"),
    "no jti": (lambda k, u: k["ES384"].assertion("trust-client", u, jti=None), "jti"),
    "unknown kid": (lambda k, u: k["ES384"].assertion("trust-client", u, headers={"kid": "nope"}), "no key with kid"),
    "no kid": (lambda k, u: jwt.encode({"iss": "trust-client", "sub": "trust-client", "aud": u,
                                        "exp": int(time.time()) + 60, "jti": "j"}, k["ES384"].private,
                                       algorithm="ES384"), "kid"),
    "signed by another key": (_other_key_same_kid, "signature"),
    "kid of an RSA key with ES384": (lambda k, u: k["other"].assertion("trust-client", u,
                                                                        headers={"kid": k["RS384"].kid}),
                                     "not a EC P-384 key"),
    "not a JWT": (lambda k, u: "not.a.jwt", "well-formed"),
    "client key of another client": (lambda k, u: k["other"].assertion("RFILE", u,
                                                                      headers={"kid": k["ES384"].kid}), "signature"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_assertion_refused(server, token_url, keys, case):
    make, why = REFUSALS[case]
    response = post_token(server, token_form(make(keys, token_url)))
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "invalid_client"
    assert why in body["error_description"]
    assert response.headers["cache-control"] == "no-store"


def test_replayed_jti_refused(server, token_url, keys):
    assertion = keys["RS384"].assertion("trust-client", token_url)
    assert post_token(server, token_form(assertion)).status_code == 200
    again = post_token(server, token_form(assertion))
    assert again.status_code == 401
    assert again.json() == {"error": "invalid_client",
                            "error_description": "client_assertion jti has already been used"}


def test_refused_assertion_does_not_burn_its_jti(server, token_url, keys):
    """A jti is recorded only once the signature checks out, so nobody can block a client's jti."""
    jti = str(uuid.uuid4())
    forged = keys["other"].assertion("trust-client", token_url, jti=jti, headers={"kid": keys["ES384"].kid})
    assert post_token(server, token_form(forged)).status_code == 401
    genuine = keys["ES384"].assertion("trust-client", token_url, jti=jti)
    assert post_token(server, token_form(genuine)).status_code == 200


@pytest.mark.parametrize("client, scope, why", [
    ("trust-client", "system/Patient.d", "none of the requested"),
    ("trust-client", "system/Observation.rs?category=laboratory", "search parameters"),
    ("trust-client", "patient/*.rs", "only system/"),
    ("trust-client", "", "scope is required"),
    ("RNONE", "system/*.rs", "none of the requested"),   # registered, but allowed no scopes
])
def test_scope_refused(server, token_url, keys, client, scope, why):
    response = post_token(server, token_form(keys["ES384"].assertion(client, token_url), scope))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_scope"
    assert why in response.json()["error_description"]


@pytest.mark.parametrize("change, status, error", [
    ({"grant_type": "authorization_code"}, 400, "unsupported_grant_type"),
    ({"grant_type": ""}, 400, "invalid_request"),
    ({"client_assertion_type": ""}, 400, "invalid_request"),
    ({"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"}, 401, "invalid_client"),
    ({"client_assertion": ""}, 400, "invalid_request"),
])
def test_malformed_token_request(server, token_url, keys, change, status, error):
    form = {**token_form(keys["ES384"].assertion("trust-client", token_url)), **change}
    response = post_token(server, form)
    assert (response.status_code, response.json()["error"]) == (status, error)


def test_token_request_must_be_a_form(server, token_url, keys):
    form = token_form(keys["ES384"].assertion("trust-client", token_url))
    response = requests.post(f"{server}/auth/token", json=form, timeout=10)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    repeated = "&".join(f"{k}={v}" for k, v in form.items()) + "&scope=system/*.cruds"
    response = requests.post(f"{server}/auth/token", data=repeated, timeout=10,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400 and "repeated" in response.json()["error_description"]
    assert requests.get(f"{server}/auth/token", timeout=10).status_code == 405


# -- bearer tokens on requests -------------------------------------------------------------
def test_no_token_is_401_with_challenge(server):
    response = requests.get(f"{server}/fhir/whoami", timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="lac-fhir-adapter"'
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "login"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "Bearer not-a-jwt",
                                    "Bearer a.b.c", "bearer"])
def test_bad_header_is_401(server, header):
    response = requests.get(f"{server}/fhir/whoami", headers={"Authorization": header}, timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="lac-fhir-adapter", error="invalid_token"')


def test_tampered_token_is_401(server, token_url, keys):
    token = post_token(server, token_form(keys["ES384"].assertion("trust-client", token_url))).json()["access_token"]
    head, _payload, sig = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["role"] = "administrator"
    forged_payload = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    response = whoami(server, f"{head}.{forged_payload}.{sig}")
    assert response.status_code == 401
    assert "signature" in response.json()["issue"][0]["diagnostics"]


def test_token_of_another_secret_or_issuer_is_401(server, settings):
    from adapter.security.caller import Caller
    from adapter.security.tokens import TokenService

    caller = Caller(client_id="trust-client", organisation="RTRUST", scopes=frozenset({"system/*.cruds"}),
                    role="hospital-trust")
    other_secret = TokenService(b"x" * 40, settings.token_issuer).issue(caller)[0]
    assert "signature" in whoami(server, other_secret).json()["issue"][0]["diagnostics"]
    from adapter.security.tokens import load_secret

    other_issuer = TokenService(load_secret(settings), "someone-else").issue(caller)[0]
    assert "not issued by this server" in whoami(server, other_issuer).json()["issue"][0]["diagnostics"]
    ours = TokenService(load_secret(settings), settings.token_issuer)
    unregistered = ours.issue(replace(caller, client_id="gone"))[0]
    assert "no longer registered" in whoami(server, unregistered).json()["issue"][0]["diagnostics"]
    ok = TokenService(load_secret(settings), settings.token_issuer).issue(caller)[0]
    assert whoami(server, ok).status_code == 200


def test_expired_access_token(settings, registry):
    clock = [time.time()]
    auth = Authenticator(settings, registry, clock=lambda: clock[0])
    from adapter.security.caller import Caller

    token, lifetime = auth.tokens.issue(Caller(client_id="trust-client", organisation="RTRUST", role="hospital-trust"))
    assert auth.authenticate(f"Bearer {token}").client_id == "trust-client"
    clock[0] += lifetime + settings.clock_skew_seconds - 5
    assert auth.authenticate(f"Bearer {token}").organisation == "RTRUST"  # within the leeway
    clock[0] += 10
    with pytest.raises(AuthenticationError, match="expired") as err:
        auth.authenticate(f"Bearer {token}")
    assert err.value.status == 401 and 'error="invalid_token"' in err.value.www_authenticate


def test_token_response_raises_oauth_error(authenticator):
    with pytest.raises(OAuthError) as err:
        authenticator.token_response({"grant_type": "password"}, "http://x/auth/token")
    assert err.value.status == 400
    assert err.value.body == {"error": "unsupported_grant_type",
                              "error_description": "only grant_type=client_credentials is supported"}


# -- discovery -----------------------------------------------------------------------------
def test_smart_configuration(server):
    response = requests.get(f"{server}/fhir/.well-known/smart-configuration", timeout=10)
    assert response.status_code == 200
    config = response.json()
    assert config["token_endpoint"] == f"{server}/auth/token"
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert config["grant_types_supported"] == ["client_credentials"]
    assert "system/*.rs" in config["scopes_supported"]
    assert set(config["capabilities"]) == {"client-confidential-asymmetric", "permission-v2", "permission-v1"}
    assert smart_configuration("https://h/auth/token")["token_endpoint"] == "https://h/auth/token"


def test_configured_public_base_is_the_audience(authenticator, keys):
    """Behind a proxy: the configured FHIR base decides the token URL (the assertion's aud)."""
    public = "https://lac.example.org/adapter/fhir"
    with serve(make_app(authenticator, public)) as root:
        config = requests.get(f"{root}/fhir/.well-known/smart-configuration", timeout=10).json()
        assert config["token_endpoint"] == "https://lac.example.org/adapter/auth/token"
        good = keys["ES384"].assertion("trust-client", "https://lac.example.org/adapter/auth/token")
        assert post_token(root, token_form(good)).status_code == 200
        local = keys["ES384"].assertion("trust-client", f"{root}/auth/token")
        assert post_token(root, token_form(local)).status_code == 401


def test_capability_security():
    security = capability_security("https://h/auth/token")
    assert security["service"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR",
        "display": "SMART-on-FHIR"}
    assert security["extension"] == [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                                      "extension": [{"url": "token", "valueUri": "https://h/auth/token"}]}]
    assert security["cors"] is False


@pytest.mark.filterwarnings("ignore:The RSA key is 1024 bits")  # pyjwt warns on signing with it
def test_short_rsa_key_and_private_jwk_refused(settings, keys):
    weak = Key("RS384", rsa_bits=1024)
    leaked = Key("ES384")
    private_jwk = {**jwt.algorithms.ECAlgorithm.to_jwk(leaked.private, as_dict=True), "kid": leaked.kid}
    registry = Registry(self_ods="ME", partners={
        "W": Partner(ods="W", name="w", jwks={"keys": [weak.jwk, private_jwk]}, scopes=("system/*.rs",))})
    auth = Authenticator(settings, registry)
    url = "http://127.0.0.1/auth/token"
    with pytest.raises(OAuthError, match="shorter than 2048 bits"):
        auth.token_response(token_form(weak.assertion("W", url)), url)
    with pytest.raises(OAuthError, match="no key with kid"):  # a private key in a JWKS is never used
        auth.token_response(token_form(leaked.assertion("W", url)), url)
