"""Settings: one TOML file (config/adapter.toml) plus environment overrides.

Deployment choices (database, limits, served types) live in the file, not in code.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "adapter.toml"


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
    )
