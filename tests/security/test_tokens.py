"""Our access tokens and their secret; dev tokens; the registry's authentication entries."""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import replace

import jwt
import pytest

from adapter.config import DevToken, load_settings
from adapter.exchange.partners import Partner, Registry, load_registry
from adapter.security.auth import AuthenticationError, Authenticator
from adapter.security.caller import Caller
from adapter.security.tokens import InvalidToken, TokenService, load_secret, secret_file

CALLER = Caller(client_id="c1", organisation="RX1", scopes=frozenset({"system/*.rs", "system/Task.cu"}),
                user="nurse-1", role="hospital-trust", serves=frozenset({"991", "LA-DEMO-1"}))


@pytest.fixture()
def settings(tmp_path, monkeypatch):
    monkeypatch.delenv("ADAPTER_TOKEN_SECRET", raising=False)
    monkeypatch.delenv("ADAPTER_DEV_TOKENS_FILE", raising=False)
    return replace(load_settings(), token_secret_file=str(tmp_path / "var" / "token-secret"))


# -- tokens --------------------------------------------------------------------------------
def test_round_trip():
    service = TokenService(b"s" * 32, "iss-1")
    token, lifetime = service.issue(CALLER)
    assert lifetime == 300
    assert service.verify(token) == CALLER


@pytest.mark.parametrize("forge, why", [
    (lambda c, s: jwt.encode(c, "k" * 32, algorithm="HS256"), "signature"),
    (lambda c, s: jwt.encode(c, None, algorithm="none"), "not valid"),
    (lambda c, s: jwt.encode(c, s, algorithm="HS512"), "not valid"),
    (lambda c, s: jwt.encode({**c, "iss": "other"}, s, algorithm="HS256"), "not issued by this server"),
    (lambda c, s: jwt.encode({k: v for k, v in c.items() if k != "exp"}, s, algorithm="HS256"), "exp"),
    (lambda c, s: jwt.encode({**c, "exp": c["iat"] - 100}, s, algorithm="HS256"), "expired"),
    (lambda c, s: jwt.encode({**c, "iat": c["iat"] + 3600}, s, algorithm="HS256"), "not valid yet"),
    (lambda c, s: jwt.encode({**c, "role": "system"}, s, algorithm="HS256"), "reserved role"),
])
def test_verify_refuses(forge, why):
    secret = b"s" * 64
    service = TokenService(secret, "iss-1")
    claims = jwt.decode(service.issue(CALLER)[0], options={"verify_signature": False})
    with pytest.raises(InvalidToken, match=why):
        service.verify(forge(claims, secret))


def test_short_secret_refused(settings, monkeypatch):
    with pytest.raises(ValueError):
        TokenService(b"short", "iss")
    monkeypatch.setenv("ADAPTER_TOKEN_SECRET", "too-short")
    with pytest.raises(ValueError, match="at least 32"):
        load_secret(settings)


def test_secret_file_created_once_private_and_shared(settings, tmp_path):
    path = tmp_path / "var" / "token-secret"
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_secret(settings))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results[0]) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert secret_file(path) == results[0]
    assert [p.name for p in path.parent.iterdir()] == ["token-secret"]  # no temporary files left
    # two services on the same file accept each other's tokens
    a, b = TokenService.from_settings(settings), TokenService.from_settings(settings)
    assert b.verify(a.issue(CALLER)[0]) == CALLER


def test_env_secret_wins(settings, monkeypatch):
    monkeypatch.setenv("ADAPTER_TOKEN_SECRET", "e" * 40)
    assert load_secret(settings) == b"e" * 40
    assert not os.path.exists(settings.token_secret_file)
    assert "e" * 40 not in repr(TokenService.from_settings(settings))


# -- dev tokens ----------------------------------------------------------------------------
REGISTRY = Registry(self_ods="RSELF", partners={
    "LA1": Partner(ods="LA1", name="LA", role="local-authority", serves=("LA1",)),
    "RH": Partner(ods="RH", name="hospital", role="hospital-trust", client_id="rh-client"),
}, me=Partner(ods="RSELF", name="us", role="community-trust", serves=("LA1",)))

DEV = (
    DevToken(token="dev-la", organisation="LA1", role="administrator", scopes=("system/*.rs",)),
    DevToken(token="dev-self", organisation="RSELF", scopes=("system/*.cruds",), user="someone"),
    DevToken(token="dev-rh", organisation="RH", role="", serves=("X",)),
    DevToken(token="dev-admin", organisation="ADMIN", role="administrator", serves=("LA1",)),
)


def test_dev_tokens_only_in_dev_mode(settings):
    dev = Authenticator(replace(settings, dev_tokens=DEV), REGISTRY, dev=True)
    la = dev.authenticate("Bearer dev-la")
    # the registry's role wins over the dev token's
    assert (la.client_id, la.organisation, la.role, la.scopes, la.serves) == (
        "LA1", "LA1", "local-authority", frozenset({"system/*.rs"}), frozenset({"LA1"}))
    me = dev.authenticate("Bearer dev-self")
    assert (me.organisation, me.role, me.serves, me.user) == ("RSELF", "community-trust", frozenset({"LA1"}), "someone")
    rh = dev.authenticate("Bearer dev-rh")
    assert (rh.client_id, rh.role, rh.serves) == ("rh-client", "hospital-trust", frozenset({"X"}))
    admin = dev.authenticate("Bearer dev-admin")
    assert admin.role == "administrator" and admin.unrestricted and admin.organisation == "ADMIN"
    with pytest.raises(AuthenticationError):
        dev.authenticate("Bearer dev-unknown")
    # real access tokens still work in dev mode
    token = dev.tokens.issue(Caller(client_id="rh-client", organisation="RH", role="hospital-trust"))[0]
    assert dev.authenticate(f"Bearer {token}").organisation == "RH"

    strict = Authenticator(replace(settings, dev_tokens=DEV), REGISTRY, dev=False)
    with pytest.raises(AuthenticationError, match="only by `serve --dev`"):
        strict.authenticate("Bearer dev-la")
    # dev mode can come from settings (serve --dev sets it)
    assert Authenticator(replace(settings, dev_tokens=DEV, dev_mode=True), REGISTRY).authenticate("Bearer dev-la")


def test_dev_token_with_bad_scope_refused_at_start(settings):
    bad = (DevToken(token="t", organisation="LA1", scopes=("patient/*.rs",)),)
    with pytest.raises(ValueError):
        Authenticator(replace(settings, dev_tokens=bad), REGISTRY, dev=True)


def test_config_dev_tokens_and_file_override(tmp_path, monkeypatch):
    monkeypatch.delenv("ADAPTER_TOKEN_SECRET", raising=False)
    monkeypatch.delenv("ADAPTER_DEV_TOKENS_FILE", raising=False)
    base = {t.token: t for t in load_settings().dev_tokens}
    assert {"dev-la-token", "dev-dhc-token", "dev-phft-token", "dev-ooa-token", "dev-admin-token"} <= set(base)
    extra = tmp_path / "tokens.toml"
    extra.write_text('[auth.dev_tokens]\n'
                     '"test-admin-token" = { organisation = "TEST-ADMIN", role = "administrator" }\n'
                     '"dev-la-token" = { organisation = "LA-DEMO-1", scopes = ["system/Task.r"] }\n')
    monkeypatch.setenv("ADAPTER_DEV_TOKENS_FILE", str(extra))
    settings = replace(load_settings(), token_secret_file=str(tmp_path / "secret"))
    tokens = {t.token: t for t in settings.dev_tokens}
    assert tokens["test-admin-token"].role == "administrator"
    assert tokens["test-admin-token"].scopes == ("system/*.cruds",)
    assert tokens["dev-la-token"].scopes == ("system/Task.r",)
    assert "dev-dhc-token" in tokens
    assert "test-admin-token" not in repr(settings)  # tokens are not shown in the settings' repr
    # top-level entries work too
    extra.write_text('"t2" = { organisation = "X", role = "commissioner" }\n')
    assert "t2" in {t.token for t in load_settings().dev_tokens}
    extra.write_text('"t3" = { organisation = "X", role = "system" }\n')
    with pytest.raises(ValueError, match="reserved"):
        load_settings()


def test_demo_config_dev_tokens_with_demo_registry(tmp_path, monkeypatch):
    """config/adapter.toml's dev tokens against config/partners.toml: one per demo organisation."""
    monkeypatch.delenv("ADAPTER_DEV_TOKENS_FILE", raising=False)
    monkeypatch.delenv("ADAPTER_PARTNERS", raising=False)
    settings = replace(load_settings(), token_secret_file=str(tmp_path / "secret"))
    auth = Authenticator(settings, load_registry(), dev=True)
    roles = {t: auth.authenticate(f"Bearer {t}").role for t in
             ("dev-la-token", "dev-dhc-token", "dev-phft-token", "dev-ooa-token", "dev-admin-token")}
    assert roles == {"dev-la-token": "local-authority", "dev-dhc-token": "community-trust",
                     "dev-phft-token": "hospital-trust", "dev-ooa-token": "ooa-trust",
                     "dev-admin-token": "administrator"}
    assert auth.authenticate("Bearer dev-dhc-token").serves == frozenset({"LA-DEMO-1", "991"})


# -- the registry --------------------------------------------------------------------------
OUTBOUND = '{ type = "smart", token_url = "https://p1/auth/token", client_id = "ME", key_file = "k.pem", kid = "k1" }'


def test_registry_auth_entries(tmp_path):
    (tmp_path / "p.jwks.json").write_text('{"keys": []}')
    path = tmp_path / "partners.toml"
    path.write_text(f'''
[self]
ods = "ME"
role = "community-trust"
serves = ["LA1"]

[[partner]]
ods = "P1"
name = "one"
role = "hospital-trust"
jwks_file = "{tmp_path / 'p.jwks.json'}"
scopes = ["system/*.rs"]
serves = ["LA1", "LA2"]
outbound_auth = {OUTBOUND}

[[partner]]
ods = "P2"
client_id = "p2-client"
jwks = {{ keys = [ {{ kty = "EC", crv = "P-384", kid = "a", x = "x", y = "y" }} ] }}
outbound_auth = {{ type = "bearer", token_env = "P2_TOKEN" }}
''')
    reg = load_registry(path)
    p1, p2 = reg.get("P1"), reg.get("P2")
    assert p1.client_id == "P1" and p1.scopes == ("system/*.rs",) and p1.serves == ("LA1", "LA2")
    assert p1.load_jwks() == {"keys": []}
    assert p1.outbound_auth.type == "smart" and p1.outbound_auth.alg == "ES384" and p1.outbound_auth.kid == "k1"
    assert p2.client_id == "p2-client" and p2.load_jwks()["keys"][0]["kid"] == "a"
    assert reg.by_client_id("p2-client") is p2 and reg.by_client_id("P2") is None
    assert reg.organisation("ME").role == "community-trust" and reg.organisation("ME").serves == ("LA1",)
    assert reg.organisation("P1") is p1 and reg.organisation("nobody") is None
    # constructor compatibility: the old fields alone still make a Partner
    assert Partner(ods="X", name="x", role="r", base_url="http://x", pathways=("iha",)).client_id == "X"


@pytest.mark.parametrize("entry, why", [
    ('outbound_auth = { type = "bearer", token = "s3cret" }', "must not hold secrets inline"),
    ('outbound_auth = { type = "smart", token_url = "https://x", client_id = "c", private_key = "---" }', "inline"),
    ('outbound_auth = { type = "smart", token_url = "https://x", client_id = "c" }', "key_file"),
    ('outbound_auth = { type = "smart", token_url = "https://x", client_id = "c", key_file = "k", alg = "HS256" }',
     "RS384 or ES384"),
    ('outbound_auth = { type = "bearer" }', "exactly one of"),
    ('outbound_auth = { type = "basic" }', "type must be"),
    ('role = "system"', "reserved"),
    ('jwks = { nokeys = 1 }', "keys"),
])
def test_registry_refuses(tmp_path, entry, why):
    path = tmp_path / "partners.toml"
    path.write_text(f'[self]\nods = "ME"\n\n[[partner]]\nods = "P"\n{entry}\n')
    with pytest.raises(ValueError, match=why):
        load_registry(path)


def test_duplicate_client_id_refused(tmp_path):
    path = tmp_path / "partners.toml"
    path.write_text('[[partner]]\nods = "A"\nclient_id = "c"\n\n[[partner]]\nods = "B"\nclient_id = "c"\n')
    with pytest.raises(ValueError, match="client_id"):
        load_registry(path)
