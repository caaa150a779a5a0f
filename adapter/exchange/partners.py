"""The partner registry (config/partners.toml): who we exchange with, where, and how each side
proves who it is.

Roles (`role`): local-authority, community-trust, hospital-trust, ooa-trust, commissioner,
administrator. Access rules read the role; "system" is reserved for in-process work and refused
here. An unknown role is kept (and simply grants what the access rules give an unknown role).

Authentication (SMART Backend Services, adapter/security/auth.py):
- inbound: a partner's `client_id` (default: its ODS code) signs client assertions with a key in
  its JWKS (`jwks`, an inline table, or `jwks_file`, relative to the project or absolute; read at
  each token request so keys can be rotated without a restart) and may be granted `scopes`.
  `serves` lists the LA ODS codes whose children the organisation serves.
- outbound: `outbound_auth` says how WE authenticate when our outbox delivers to the partner
  (adapter/exchange/credentials.py). Secrets (private keys, static tokens) only from files or
  environment variables, never inline here.
"""

from __future__ import annotations

import json
import logging
import os
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..config import PROJECT_ROOT

log = logging.getLogger(__name__)

DEFAULT_FILE = PROJECT_ROOT / "config" / "partners.toml"

ROLES = ("local-authority", "community-trust", "hospital-trust", "ooa-trust", "commissioner", "administrator")
# Keys that would put a secret into the config file itself: refused.
_INLINE_SECRETS = {"token", "private_key", "key", "secret", "password", "client_secret"}


@dataclass(frozen=True)
class OutboundAuth:
    """How we authenticate to a partner: type "smart" (client credentials with our signed
    assertion) or "bearer" (a static token from an env variable or a file)."""

    type: str
    token_url: str | None = None
    client_id: str | None = None  # our client_id at the partner
    key_file: str | None = None   # our private key (PEM), relative to the project or absolute
    alg: str = "ES384"
    kid: str | None = None
    scope: str = "system/*.cruds"
    token_env: str | None = None
    token_file: str | None = None

    @classmethod
    def from_config(cls, raw: dict, where: str) -> OutboundAuth:
        secrets = _INLINE_SECRETS & set(raw)
        if secrets:
            raise ValueError(f"{where}: outbound_auth must not hold secrets inline ({', '.join(sorted(secrets))}); "
                             f"use key_file, token_env or token_file")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{where}: unknown outbound_auth keys {sorted(unknown)}")
        auth = cls(**raw)
        if auth.type == "smart":
            missing = [k for k in ("token_url", "client_id", "key_file") if not getattr(auth, k)]
            if missing:
                raise ValueError(f"{where}: outbound_auth type smart needs {', '.join(missing)}")
            if auth.alg not in ("RS384", "ES384"):
                raise ValueError(f"{where}: outbound_auth alg must be RS384 or ES384")
        elif auth.type == "bearer":
            if bool(auth.token_env) == bool(auth.token_file):
                raise ValueError(f"{where}: outbound_auth type bearer needs exactly one of token_env, token_file")
        else:
            raise ValueError(f"{where}: outbound_auth type must be 'smart' or 'bearer', not {auth.type!r}")
        return auth


@dataclass(frozen=True)
class Partner:
    ods: str
    name: str
    role: str = ""
    base_url: str | None = None
    pathways: tuple[str, ...] = ()
    client_id: str = ""                  # SMART client_id; "" means the ODS code
    jwks: dict | None = field(default=None, compare=False, hash=False)  # inline JWKS
    jwks_file: Path | None = None
    scopes: tuple[str, ...] = ()         # the scopes this client may be granted
    serves: tuple[str, ...] = ()         # LA ODS codes whose children this organisation serves
    outbound_auth: OutboundAuth | None = None

    def __post_init__(self) -> None:
        if not self.client_id:
            object.__setattr__(self, "client_id", self.ods)

    def load_jwks(self) -> dict:
        """The partner's public keys ({"keys": [...]}): inline, else read from jwks_file now."""
        if self.jwks is not None:
            return self.jwks
        if self.jwks_file is None:
            return {"keys": []}
        with open(self.jwks_file, encoding="utf-8") as fh:
            return json.load(fh)


@dataclass(frozen=True)
class DeliveryRules:
    max_attempts: int = 8
    base_seconds: float = 2.0
    max_seconds: float = 300.0
    lease_seconds: float = 60.0
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Registry:
    self_ods: str
    partners: dict[str, Partner] = field(default_factory=dict)
    delivery: DeliveryRules = DeliveryRules()
    me: Partner | None = None  # the [self] entry (name, role, serves) as a Partner

    def get(self, ods: str) -> Partner | None:
        return self.partners.get(ods)

    def organisation(self, ods: str | None) -> Partner | None:
        """A registered partner, or our own organisation ([self]), by ODS code."""
        if not ods:
            return None
        found = self.partners.get(ods)
        if found is None and ods == self.self_ods:
            return self.me or Partner(ods=self.self_ods, name=self.self_ods)
        return found

    def by_client_id(self, client_id: str) -> Partner | None:
        """The partner whose SMART client_id this is (only partners are clients, not [self])."""
        for partner in self.partners.values():
            if partner.client_id == client_id:
                return partner
        return None


def _path(value: str | None) -> Path | None:
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else PROJECT_ROOT / p


def _role(entry: dict, where: str) -> str:
    role = entry.get("role", "")
    if role == "system":
        raise ValueError(f"{where}: role 'system' is reserved for in-process work")
    if role and role not in ROLES:
        log.warning("%s: role %r is not one of %s", where, role, ", ".join(ROLES))
    return role


def _partner(entry: dict, where: str) -> Partner:
    jwks = entry.get("jwks")
    if jwks is not None and entry.get("jwks_file"):
        raise ValueError(f"{where}: give jwks or jwks_file, not both")
    if jwks is not None and not isinstance(jwks.get("keys"), list):
        raise ValueError(f"{where}: jwks must be a table with a `keys` array")
    outbound = entry.get("outbound_auth")
    return Partner(ods=entry["ods"], name=entry.get("name", entry["ods"]), role=_role(entry, where),
                   base_url=(entry.get("base_url") or "").rstrip("/") or None,
                   pathways=tuple(entry.get("pathways", ())),
                   client_id=str(entry.get("client_id") or entry["ods"]),
                   jwks=jwks, jwks_file=_path(entry.get("jwks_file")),
                   scopes=tuple(entry.get("scopes", ())), serves=tuple(entry.get("serves", ())),
                   outbound_auth=OutboundAuth.from_config(outbound, f"{where} outbound_auth") if outbound else None)


def load_registry(path: Path | None = None) -> Registry:
    path = path or Path(os.environ.get("ADAPTER_PARTNERS", DEFAULT_FILE))
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    partners = {}
    clients: dict[str, str] = {}
    for entry in raw.get("partner", []):
        partner = _partner(entry, f"{path}: partner {entry.get('ods')}")
        if partner.client_id in clients:
            raise ValueError(f"{path}: client_id {partner.client_id!r} is used by {clients[partner.client_id]} "
                             f"and {partner.ods}")
        clients[partner.client_id] = partner.ods
        partners[partner.ods] = partner
    delivery = DeliveryRules(**{k: v for k, v in raw.get("delivery", {}).items()
                                if k in DeliveryRules.__dataclass_fields__})
    me_raw = raw.get("self", {})
    me = None
    if me_raw.get("ods"):
        me = Partner(ods=me_raw["ods"], name=me_raw.get("name", me_raw["ods"]), role=_role(me_raw, f"{path}: [self]"),
                     serves=tuple(me_raw.get("serves", ())), pathways=tuple(me_raw.get("pathways", ())))
    return Registry(self_ods=me_raw.get("ods", ""), partners=partners, delivery=delivery, me=me)


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    return load_registry()
