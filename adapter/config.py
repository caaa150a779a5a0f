"""Settings: one TOML file (config/adapter.toml) plus environment overrides.

Deployment choices (database, limits, served types) live in the file, not in code.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "adapter.toml"


@dataclass(frozen=True)
class DevToken:
    """A static bearer token accepted only by `serve --dev` (config [auth.dev_tokens])."""

    token: str = field(repr=False)
    organisation: str
    role: str = ""  # fallback only: a registered organisation's role comes from the registry
    scopes: tuple[str, ...] = ("system/*.cruds",)
    serves: tuple[str, ...] = ()  # fallback only, like role
    user: str | None = None
    client_id: str | None = None  # default: the organisation's client_id, else "dev:<organisation>"


@dataclass(frozen=True)
class Settings:
    database_url: str
    resource_types: tuple[str, ...]
    max_body_bytes: int
    default_page_size: int
    max_page_size: int
    base_url: str | None = None  # fixed public base; None: derived from each request
    # [http]: hardening of the HTTP surface (adapter/api/hardening.py)
    cors_origins: tuple[str, ...] = ()    # browser origins allowed by CORS; none by default
    max_url_bytes: int = 8192             # longer URL -> 414
    max_query_params: int = 200           # more query parameters -> 400
    max_header_count: int = 100           # more request headers -> 431
    max_header_bytes: int = 16384         # more header bytes -> 431 (0: leave it to the server)
    rate_limit_per_second: float = 200.0  # per client token bucket; 0 disables
    rate_limit_burst: int = 400
    reads_on_event_loop: bool = True      # read/vread by id without a worker thread (see config/adapter.toml)
    audit_queue_limit: int = 5000         # queued read AuditEvents above which responses wait (rest/audit.py)
    # [auth]: SMART Backend Services (adapter/security/auth.py, tokens.py)
    token_lifetime_seconds: int = 300      # lifetime of the access tokens we issue
    token_secret_file: str = "var/token-secret"  # HS256 key (env ADAPTER_TOKEN_SECRET wins); relative: project
    token_issuer: str = "lac-fhir-adapter"  # `iss` of our access tokens
    assertion_max_seconds: int = 300       # a client assertion's exp may be at most this far ahead
    clock_skew_seconds: int = 30           # leeway on exp/iat of assertions and access tokens
    dev_mode: bool = False                 # accept dev_tokens (set by `serve --dev` only, never by config)
    dev_tokens: tuple[DevToken, ...] = ()  # [auth.dev_tokens], then ADAPTER_DEV_TOKENS_FILE on top


def load_settings(path: Path | None = None, database_url: str | None = None) -> Settings:
    """Read the config file, then apply environment and explicit overrides."""
    path = path or Path(os.environ.get("ADAPTER_CONFIG", DEFAULT_CONFIG))
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    fhir = raw.get("fhir", {})
    http = raw.get("http", {})
    url = database_url or os.environ.get("ADAPTER_DATABASE_URL") or raw.get("database", {}).get("url")
    if not url:
        raise ValueError(f"{path}: [database] url is required")
    return Settings(
        database_url=url,
        resource_types=tuple(fhir.get("resource_types", ())),
        max_body_bytes=int(fhir.get("max_body_bytes", 8 * 1024 * 1024)),
        default_page_size=int(fhir.get("default_page_size", 20)),
        max_page_size=int(fhir.get("max_page_size", 500)),
        base_url=os.environ.get("ADAPTER_BASE_URL") or fhir.get("base_url"),
        cors_origins=tuple(http.get("cors_origins", ())),
        max_url_bytes=int(http.get("max_url_bytes", 8192)),
        max_query_params=int(http.get("max_query_params", 200)),
        max_header_count=int(http.get("max_header_count", 100)),
        max_header_bytes=int(http.get("max_header_bytes", 16384)),
        rate_limit_per_second=float(os.environ.get("ADAPTER_RATE_LIMIT_PER_SECOND")
                                    or http.get("rate_limit_per_second", 200)),
        rate_limit_burst=int(http.get("rate_limit_burst", 400)),
        reads_on_event_loop=bool(http.get("reads_on_event_loop", True)),
        audit_queue_limit=int(raw.get("audit", {}).get("queue_limit", 5000)),
        **_auth_settings(raw.get("auth", {}), path),
    )


def _auth_settings(auth: dict, path: Path) -> dict:
    tokens = dict(auth.get("dev_tokens", {}))
    extra = os.environ.get("ADAPTER_DEV_TOKENS_FILE")
    if extra:
        tokens.update(load_dev_tokens_table(Path(extra)))
    return dict(
        token_lifetime_seconds=int(auth.get("token_lifetime_seconds", 300)),
        token_secret_file=str(os.environ.get("ADAPTER_TOKEN_SECRET_FILE") or auth.get("token_secret_file",
                                                                                     "var/token-secret")),
        token_issuer=str(auth.get("issuer", "lac-fhir-adapter")),
        assertion_max_seconds=int(auth.get("assertion_max_seconds", 300)),
        clock_skew_seconds=int(auth.get("clock_skew_seconds", 30)),
        dev_tokens=dev_tokens(tokens, f"{path} [auth.dev_tokens]" if not extra else f"{path} / {extra}"),
    )


def load_dev_tokens_table(path: Path) -> dict:
    """A dev tokens TOML: `[auth.dev_tokens]`, `[dev_tokens]` or the token entries at top level."""
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    if "auth" in raw:
        return dict(raw["auth"].get("dev_tokens", {}))
    if "dev_tokens" in raw:
        return dict(raw["dev_tokens"])
    return raw


def dev_tokens(table: dict, where: str = "dev tokens") -> tuple[DevToken, ...]:
    """`{"token" = {organisation, role, scopes, serves, user, client_id}}` as DevTokens."""
    out = []
    for token, entry in table.items():
        if not isinstance(entry, dict) or not entry.get("organisation"):
            raise ValueError(f"{where}: token entry needs a table with `organisation`")
        unknown = set(entry) - {"organisation", "role", "scopes", "serves", "user", "client_id"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} in a dev token entry")
        if entry.get("role") == "system":
            raise ValueError(f"{where}: role 'system' is reserved for in-process work")
        out.append(DevToken(token=token, organisation=str(entry["organisation"]), role=str(entry.get("role", "")),
                            scopes=tuple(entry.get("scopes", ("system/*.cruds",))),
                            serves=tuple(entry.get("serves", ())), user=entry.get("user"),
                            client_id=entry.get("client_id")))
    return tuple(out)
