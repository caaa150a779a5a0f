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


def load_settings(path: Path | None = None, database_url: str | None = None) -> Settings:
    """Read the config file, then apply environment and explicit overrides."""
    path = path or Path(os.environ.get("ADAPTER_CONFIG", DEFAULT_CONFIG))
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    fhir = raw.get("fhir", {})
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
    )
