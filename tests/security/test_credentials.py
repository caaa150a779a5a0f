"""Our outbox's credentials for partners, against a real token endpoint (this project's own)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import requests

from adapter.config import load_settings
from adapter.exchange import credentials
from adapter.exchange.credentials import CredentialsError, outbound_headers
from adapter.exchange.partners import OutboundAuth, Partner, Registry
from adapter.security.auth import Authenticator
from tests.security.support import Key, make_app, serve


@pytest.fixture(scope="module")
def key():
    return Key("ES384")


@pytest.fixture(scope="module")
def rsa_key():
    return Key("RS384")


@pytest.fixture(scope="module")
def server(key, rsa_key, tmp_path_factory):
    """The partner's side: an adapter token endpoint where WE ("RSELF") are a registered client."""
    settings = replace(load_settings(), token_secret_file=str(tmp_path_factory.mktemp("s") / "secret"))
    registry = Registry(self_ods="PARTNER", partners={
        "RSELF": Partner(ods="RSELF", name="us", role="community-trust", client_id="rself-client",
                         jwks={"keys": [key.jwk, rsa_key.jwk]}, scopes=("system/*.cruds",), serves=("LA1",)),
    })
    with serve(make_app(Authenticator(settings, registry))) as root:
        yield root


@pytest.fixture()
def key_files(key, rsa_key, tmp_path):
    (tmp_path / "es.pem").write_bytes(key.pem())
    (tmp_path / "rs.pem").write_bytes(rsa_key.pem())
    credentials.clear_cache()
    yield tmp_path
    credentials.clear_cache()


def smart_partner(server, key_file, kid, alg="ES384", client_id="rself-client", scope="system/*.cruds"):
    auth = OutboundAuth(type="smart", token_url=f"{server}/auth/token", client_id=client_id, key_file=str(key_file),
                        alg=alg, kid=kid, scope=scope)
    return Partner(ods="PARTNER", name="partner", base_url=f"{server}/fhir", outbound_auth=auth)


def whoami(server, headers):
    return requests.get(f"{server}/fhir/whoami", headers=headers, timeout=10)


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_smart_round_trip(server, key, rsa_key, key_files, alg):
    signer, pem = (key, "es.pem") if alg == "ES384" else (rsa_key, "rs.pem")
    partner = smart_partner(server, key_files / pem, signer.kid, alg)
    headers = outbound_headers(partner)
    assert headers["Authorization"].startswith("Bearer ")
    me = whoami(server, headers)
    assert me.status_code == 200, me.text
    assert me.json()["client_id"] == "rself-client" and me.json()["organisation"] == "RSELF"
    assert me.json()["scopes"] == ["system/*.cruds"]


def test_token_cached_until_shortly_before_expiry(server, key, key_files):
    partner = smart_partner(server, key_files / "es.pem", key.kid)
    # fetched 280 s ago (its assertion is still within its 300 s): cached until 300 - 30 s after that
    old = outbound_headers(partner, now=time.time() - 280)
    assert outbound_headers(partner, now=time.time() - 275) == old  # still cached
    fresh = outbound_headers(partner)  # expired in the cache: a new token
    assert fresh != old
    assert outbound_headers(partner) == fresh
    assert whoami(server, fresh).status_code == 200


def test_concurrent_callers_share_one_fetch(server, key, key_files):
    import threading

    partner = smart_partner(server, key_files / "es.pem", key.kid)
    results = []
    threads = [threading.Thread(target=lambda: results.append(outbound_headers(partner)["Authorization"]))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and len(set(results)) == 1


def test_refused_by_token_endpoint(server, key, key_files):
    wrong_kid = smart_partner(server, key_files / "es.pem", "no-such-kid")
    with pytest.raises(CredentialsError, match="401 invalid_client") as err:
        outbound_headers(wrong_kid)
    assert not err.value.retryable
    too_much = smart_partner(server, key_files / "es.pem", key.kid, scope="patient/*.rs")
    with pytest.raises(CredentialsError, match="400 invalid_scope"):
        outbound_headers(too_much)


def test_missing_key_or_unreachable(server, key, key_files, tmp_path):
    with pytest.raises(CredentialsError, match="private key file cannot be read") as err:
        outbound_headers(smart_partner(server, tmp_path / "missing.pem", key.kid))
    assert not err.value.retryable
    from tests.support.server import free_port

    down = smart_partner(f"http://127.0.0.1:{free_port()}", key_files / "es.pem", key.kid)
    with pytest.raises(CredentialsError, match="unreachable") as err:
        outbound_headers(down)
    assert err.value.retryable


def test_bearer_from_env_or_file(tmp_path, monkeypatch):
    env = Partner(ods="E", name="e", outbound_auth=OutboundAuth(type="bearer", token_env="TEST_PARTNER_TOKEN"))
    monkeypatch.delenv("TEST_PARTNER_TOKEN", raising=False)
    with pytest.raises(CredentialsError, match="TEST_PARTNER_TOKEN is not set"):
        outbound_headers(env)
    monkeypatch.setenv("TEST_PARTNER_TOKEN", "tok-123")
    assert outbound_headers(env) == {"Authorization": "Bearer tok-123"}
    (tmp_path / "token").write_text("tok-456\n")
    file = Partner(ods="F", name="f", outbound_auth=OutboundAuth(type="bearer", token_file=str(tmp_path / "token")))
    assert outbound_headers(file) == {"Authorization": "Bearer tok-456"}
    (tmp_path / "token").write_text("")
    with pytest.raises(CredentialsError, match="empty"):
        outbound_headers(file)


def test_no_outbound_auth():
    assert outbound_headers(Partner(ods="N", name="n")) == {}
